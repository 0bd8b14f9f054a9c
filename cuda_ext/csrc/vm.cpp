// Sampling of a TensoRF vector-matrix decomposition (see vm_common.h): checks and dispatch.
#include "checks.h"
#include "ops.h"

namespace relight3d {

namespace {

void check_vm(const char* op, const Tensor& planes, const Tensor& lines, const Tensor& xyz) {
  const auto dev = planes.device();
  check_input(planes, op, "planes", at::kFloat, dev);
  check_input(lines, op, "lines", at::kFloat, dev);
  check_input(xyz, op, "xyz", at::kFloat, dev);
  TORCH_CHECK(planes.dim() == 4 && planes.size(0) == 3, op, ": 'planes' must have shape (3, C, H, W), got ",
              planes.sizes());
  const int64_t c = planes.size(1);
  TORCH_CHECK(planes.size(2) > 0 && planes.size(3) > 0, op, ": 'planes' must not be empty, got ", planes.sizes());
  TORCH_CHECK(lines.dim() == 4 && lines.size(0) == 3 && lines.size(1) == c && lines.size(2) > 0 && lines.size(3) == 1,
              op, ": 'lines' must have shape (3, ", c, ", L, 1), got ", lines.sizes());
  TORCH_CHECK(xyz.dim() == 2 && xyz.size(1) == 3, op, ": 'xyz' must have shape (n, 3), got ", xyz.sizes());
  // the CPU kernels keep node coordinates in int32
  constexpr int64_t kMaxSize = (int64_t{1} << 31) - 3;
  TORCH_CHECK(planes.size(2) <= kMaxSize && planes.size(3) <= kMaxSize && lines.size(2) <= kMaxSize, op,
              ": planes and lines must have fewer than 2^31 - 2 nodes per axis");
}

}  // namespace

Tensor sample_vm_features_fwd(const Tensor& planes, const Tensor& lines, const Tensor& xyz) {
  check_vm("sample_vm_features", planes, lines, xyz);
  R3D_DISPATCH(planes.device(), sample_vm_features_fwd, planes, lines, xyz);
}

std::tuple<Tensor, Tensor> sample_vm_features_bwd(const Tensor& grad_out, const Tensor& planes, const Tensor& lines,
                                                  const Tensor& xyz) {
  const char* op = "sample_vm_features_bwd";
  check_vm(op, planes, lines, xyz);
  check_input(grad_out, op, "grad_out", at::kFloat, planes.device());
  check_shape(grad_out, op, "grad_out", {xyz.size(0), 3 * planes.size(1)});
  R3D_DISPATCH(planes.device(), sample_vm_features_bwd, grad_out, planes, lines, xyz);
}

}  // namespace relight3d
