// Sampling of a TensoRF vector-matrix decomposition (see vm_common.h): checks and dispatch.
#include "checks.h"
#include "ops.h"

namespace relight3d {

namespace {

void check_vm(const char* op, const Tensor& planes, const Tensor& lines, const Tensor& xyz) {
  const auto dev = planes.device();
  R3D_CHECK(op, dev, at::kFloat, (planes), 3, -1, -1, -1);
  const int64_t c = planes.size(1);
  R3D_CHECK(op, dev, at::kFloat, (lines), 3, c, -1, 1);
  R3D_CHECK(op, dev, at::kFloat, (xyz), -1, 3);
  TORCH_CHECK(planes.size(2) > 0 && planes.size(3) > 0 && lines.size(2) > 0, op,
              ": planes and lines must not be empty, got ", planes.sizes(), " and ", lines.sizes());
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
  R3D_CHECK(op, planes.device(), at::kFloat, (grad_out), xyz.size(0), 3 * planes.size(1));
  R3D_DISPATCH(planes.device(), sample_vm_features_bwd, grad_out, planes, lines, xyz);
}

}  // namespace relight3d
