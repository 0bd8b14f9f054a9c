// Input checks and device dispatch for the entry points in <op>.cpp. The entry points raise on a wrong dtype,
// device, layout or shape: they never cast, move or copy an input.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

namespace relight3d {

// One input of a check: a tensor, or an optional one (an empty optional passes every check).
class Input {
 public:
  Input(const at::Tensor& t) : t_(&t) {}                                         // NOLINT: implicit on purpose
  Input(const std::optional<at::Tensor>& t) : t_(t.has_value() ? &*t : nullptr) {}  // NOLINT
  const at::Tensor* get() const { return t_; }

 private:
  const at::Tensor* t_;
};

// The i-th name in "(a, b, c)", the spelling of a parenthesised list of identifiers.
inline std::string nth_name(const char* names, size_t i) {
  const std::string s(names);
  size_t begin = 1;  // past '('
  for (; i > 0; --i) begin = s.find(',', begin) + 1;
  size_t end = s.find(',', begin);
  if (end == std::string::npos) end = s.size() - 1;  // before ')'
  while (begin < end && s[begin] == ' ') ++begin;
  return s.substr(begin, end - begin);
}

// See R3D_CHECK.
inline void check_inputs(const char* op, const at::Device& device, at::ScalarType dtype,
                         std::initializer_list<int64_t> shape, const char* names, std::initializer_list<Input> inputs) {
  const at::Tensor* first = nullptr;
  size_t i = 0;
  for (const Input& input : inputs) {
    const at::Tensor* t = input.get();
    const size_t index = i++;
    if (t == nullptr) continue;
    const std::string name = nth_name(names, index);
    TORCH_CHECK(t->defined(), op, ": '", name, "' is undefined");
    TORCH_CHECK(t->device() == device, op, ": '", name, "' is on ", t->device(), " but the other inputs are on ",
                device);
    TORCH_CHECK(t->scalar_type() == dtype, op, ": '", name, "' must be ", dtype, ", got ", t->scalar_type());
    TORCH_CHECK(t->is_contiguous(), op, ": '", name, "' must be contiguous");
    if (first == nullptr && shape.size() == 0) {  // any shape
      first = t;
      continue;
    }
    // the expected sizes: the pattern, its -1 taken from the first tensor checked with this one
    std::vector<int64_t> expected(shape);
    if (first != nullptr) expected = first->sizes().vec();
    for (size_t a = 0; a < shape.size() && a < expected.size(); ++a) {
      if (shape.begin()[a] >= 0) expected[a] = shape.begin()[a];
    }
    bool ok = static_cast<size_t>(t->dim()) == expected.size();
    for (size_t a = 0; ok && a < expected.size(); ++a) ok = expected[a] < 0 || t->size(a) == expected[a];
    TORCH_CHECK(ok, op, ": '", name, "' must have shape ", at::IntArrayRef(expected), " (-1: any), got ", t->sizes());
    if (first == nullptr) first = t;
  }
}

// Whether tensors on `device` go to the CUDA kernels (true) or the CPU kernels (false); raises for other devices.
inline bool use_cuda(const at::Device& device) {
  if (device.is_cuda()) {
#ifdef WITH_CUDA
    return true;
#else
    TORCH_CHECK(false, "relight3d._C was built without CUDA support; use the torch implementation for cuda tensors");
#endif
  }
  TORCH_CHECK(device.is_cpu(), "relight3d._C supports cpu and cuda tensors, got ", device);
  return false;
}

}  // namespace relight3d

#define R3D_EXPAND(...) __VA_ARGS__

// R3D_CHECK(op, device, dtype, (tensors...), shape...): each of the tensors (at::Tensor, or std::optional of one that
// may be empty) is defined, on `device`, of `dtype`, contiguous, of `shape` (-1: any size along that axis; no shape:
// any), and all of them have the same sizes. Messages name the tensors as spelled.
//   R3D_CHECK(op, dev, at::kFloat, (rays_o, rays_d), -1, 3);
#define R3D_CHECK(op, device, dtype, tensors, ...) \
  ::relight3d::check_inputs(op, device, dtype, {__VA_ARGS__}, #tensors, {R3D_EXPAND tensors})

// `return` the result of relight3d::cuda::fn(...) or relight3d::cpu::fn(...) depending on `device`, for the ops whose
// CPU and CUDA algorithms differ (the others run one shared functor on either device, see parallel.h).
#ifdef WITH_CUDA
#define R3D_DISPATCH(device, fn, ...) \
  return ::relight3d::use_cuda(device) ? ::relight3d::cuda::fn(__VA_ARGS__) : ::relight3d::cpu::fn(__VA_ARGS__)
#else
#define R3D_DISPATCH(device, fn, ...) \
  ::relight3d::use_cuda(device);      \
  return ::relight3d::cpu::fn(__VA_ARGS__)
#endif

namespace relight3d {

// The layout of a cascaded occupancy grid: res even in (0, 1024] (Morton codes of 10 bits per axis), n_cascades in
// [1, 30].
inline void check_grid_layout(const char* op, int64_t n_cascades, int64_t res) {
  TORCH_CHECK(res > 0 && res <= 1024 && res % 2 == 0, op, ": res must be even and in (0, 1024], got ", res);
  TORCH_CHECK(n_cascades >= 1 && n_cascades <= 30, op, ": n_cascades must be in [1, 30], got ", n_cascades);
}

// A cascaded occupancy grid: its layout, bitfield uint8 [n_cascades * res^3 / 8] and aabb float32 [6].
inline void check_grid(const char* op, const at::Device& device, const at::Tensor& bitfield, const at::Tensor& aabb,
                       int64_t n_cascades, int64_t res) {
  check_grid_layout(op, n_cascades, res);
  R3D_CHECK(op, device, at::kByte, (bitfield), n_cascades * res * res * res / 8);
  R3D_CHECK(op, device, at::kFloat, (aabb), 6);
}

}  // namespace relight3d
