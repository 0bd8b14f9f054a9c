// Input checks and device dispatch for the entry points in <op>.cpp.
#pragma once

#include <ATen/ATen.h>

#include <initializer_list>

namespace relight3d {

// dtype, device and contiguity of one input
inline void check_input(const at::Tensor& t, const char* op, const char* name, at::ScalarType dtype,
                        const at::Device& device) {
  TORCH_CHECK(t.defined(), op, ": '", name, "' is undefined");
  TORCH_CHECK(t.device() == device, op, ": '", name, "' is on ", t.device(), " but the other inputs are on ", device);
  TORCH_CHECK(t.scalar_type() == dtype, op, ": '", name, "' must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), op, ": '", name, "' must be contiguous");
}

inline void check_shape(const at::Tensor& t, const char* op, const char* name, std::initializer_list<int64_t> shape) {
  TORCH_CHECK(t.sizes().equals(shape), op, ": '", name, "' must have shape ", at::IntArrayRef(shape), ", got ",
              t.sizes());
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

// `return` the result of relight3d::cuda::fn(...) or relight3d::cpu::fn(...) depending on `device`.
#ifdef WITH_CUDA
#define R3D_DISPATCH(device, fn, ...) \
  return ::relight3d::use_cuda(device) ? ::relight3d::cuda::fn(__VA_ARGS__) : ::relight3d::cpu::fn(__VA_ARGS__)
#else
#define R3D_DISPATCH(device, fn, ...) \
  ::relight3d::use_cuda(device);      \
  return ::relight3d::cpu::fn(__VA_ARGS__)
#endif
