// Sampling of a TensoRF VM decomposition: CUDA kernels (see vm_common.h for what is computed).
//
// One thread per (point, output column) in both directions, in the original [3, C, H, W] layout. The forward writes
// rows coalesced; the backward recomputes its column's plane and line values and scatters the gradients with
// atomicAdd, as grid_sample's CUDA backward does (so the order of the additions, hence the last bits of the
// gradients, varies from run to run).
#include "common.h"
#include "parallel_cuda.cuh"
#include "ops.h"
#include "vm_common.h"

#include <math_constants.h>

namespace relight3d {
namespace cuda {

namespace {

// The lookups of one (point, pair): nodes of the plane's x and y axes and of the line.
struct PairNodes {
  AxisNodes x, y, l;
};

enum class PairStatus { kZero, kNaN, kHit };

// kNaN for a point with a non-finite coordinate (NaN features, no gradient), kZero when the plane or the line lookup
// is entirely outside (the product is 0), kHit otherwise.
__device__ __forceinline__ PairStatus pair_nodes(const float* q, int p, int64_t h, int64_t w, int64_t l,
                                                 PairNodes* nodes) {
  if (!(isfinite(q[0]) && isfinite(q[1]) && isfinite(q[2]))) return PairStatus::kNaN;
  nodes->x = axis_nodes(q[vm_plane_x_axis(p)], w);
  nodes->y = axis_nodes(q[vm_plane_y_axis(p)], h);
  nodes->l = axis_nodes(q[vm_line_axis(p)], l);
  const bool hit = (nodes->x.valid0 || nodes->x.valid1) && (nodes->y.valid0 || nodes->y.valid1) &&
                   (nodes->l.valid0 || nodes->l.valid1);
  return hit ? PairStatus::kHit : PairStatus::kZero;
}

// Value of one node, 0 outside.
__device__ __forceinline__ float node_value(const float* __restrict__ data, bool valid, int64_t offset) {
  return valid ? __ldg(data + offset) : 0.0f;
}

__global__ void sample_vm_features_fwd_kernel(int64_t total, const float* __restrict__ planes,
                                              const float* __restrict__ lines, const float* __restrict__ xyz,
                                              int64_t c, int64_t h, int64_t w, int64_t l, float* __restrict__ out) {
  const int64_t idx = thread_index(total);
  if (idx < 0) return;
  const int64_t cols = 3 * c;
  const int64_t i = idx / cols, col = idx - i * cols;
  const int p = static_cast<int>(col / c);
  PairNodes nd;
  const PairStatus status = pair_nodes(xyz + 3 * i, p, h, w, l, &nd);
  if (status != PairStatus::kHit) {
    out[idx] = status == PairStatus::kNaN ? CUDART_NAN_F : 0.0f;
    return;
  }
  const float* img = planes + col * h * w;
  const float* line = lines + col * l;
  const AxisNodes &x = nd.x, &y = nd.y, &ln = nd.l;
  const int64_t r0 = y.i0 * w, r1 = r0 + w;
  const float pv = node_value(img, y.valid0 && x.valid0, r0 + x.i0) * (y.w0 * x.w0) +
                   node_value(img, y.valid0 && x.valid1, r0 + x.i0 + 1) * (y.w0 * x.w1) +
                   node_value(img, y.valid1 && x.valid0, r1 + x.i0) * (y.w1 * x.w0) +
                   node_value(img, y.valid1 && x.valid1, r1 + x.i0 + 1) * (y.w1 * x.w1);
  const float lv = node_value(line, ln.valid0, ln.i0) * ln.w0 + node_value(line, ln.valid1, ln.i0 + 1) * ln.w1;
  out[idx] = pv * lv;
}

__global__ void sample_vm_features_bwd_kernel(int64_t total, const float* __restrict__ grad_out,
                                              const float* __restrict__ planes, const float* __restrict__ lines,
                                              const float* __restrict__ xyz, int64_t c, int64_t h, int64_t w,
                                              int64_t l, float* __restrict__ grad_planes,
                                              float* __restrict__ grad_lines) {
  const int64_t idx = thread_index(total);
  if (idx < 0) return;
  const float g = grad_out[idx];
  if (g == 0.0f) return;
  const int64_t cols = 3 * c;
  const int64_t i = idx / cols, col = idx - i * cols;
  const int p = static_cast<int>(col / c);
  PairNodes nd;
  if (pair_nodes(xyz + 3 * i, p, h, w, l, &nd) != PairStatus::kHit) return;
  const float* img = planes + col * h * w;
  const float* line = lines + col * l;
  const AxisNodes &x = nd.x, &y = nd.y, &ln = nd.l;
  const int64_t r0 = y.i0 * w, r1 = r0 + w;
  const bool v00 = y.valid0 && x.valid0, v01 = y.valid0 && x.valid1;
  const bool v10 = y.valid1 && x.valid0, v11 = y.valid1 && x.valid1;
  const float w00 = y.w0 * x.w0, w01 = y.w0 * x.w1, w10 = y.w1 * x.w0, w11 = y.w1 * x.w1;
  const float pv = node_value(img, v00, r0 + x.i0) * w00 + node_value(img, v01, r0 + x.i0 + 1) * w01 +
                   node_value(img, v10, r1 + x.i0) * w10 + node_value(img, v11, r1 + x.i0 + 1) * w11;
  const float lv = node_value(line, ln.valid0, ln.i0) * ln.w0 + node_value(line, ln.valid1, ln.i0 + 1) * ln.w1;
  const float gp = g * lv, gv = g * pv;
  float* gimg = grad_planes + col * h * w;
  float* gline = grad_lines + col * l;
  if (v00) atomicAdd(gimg + r0 + x.i0, w00 * gp);
  if (v01) atomicAdd(gimg + r0 + x.i0 + 1, w01 * gp);
  if (v10) atomicAdd(gimg + r1 + x.i0, w10 * gp);
  if (v11) atomicAdd(gimg + r1 + x.i0 + 1, w11 * gp);
  if (ln.valid0) atomicAdd(gline + ln.i0, ln.w0 * gv);
  if (ln.valid1) atomicAdd(gline + ln.i0 + 1, ln.w1 * gv);
}

}  // namespace

Tensor sample_vm_features_fwd(const Tensor& planes, const Tensor& lines, const Tensor& xyz) {
  const c10::cuda::CUDAGuard guard(planes.device());
  const int64_t n = xyz.size(0), c = planes.size(1);
  Tensor out = at::empty({n, 3 * c}, planes.options());
  R3D_LAUNCH(sample_vm_features_fwd_kernel, n * 3 * c, planes.data_ptr<float>(), lines.data_ptr<float>(),
             xyz.data_ptr<float>(), c, planes.size(2), planes.size(3), lines.size(2), out.data_ptr<float>());
  return out;
}

std::tuple<Tensor, Tensor> sample_vm_features_bwd(const Tensor& grad_out, const Tensor& planes, const Tensor& lines,
                                                  const Tensor& xyz) {
  const c10::cuda::CUDAGuard guard(planes.device());
  const int64_t n = xyz.size(0), c = planes.size(1);
  Tensor grad_planes = at::zeros_like(planes);
  Tensor grad_lines = at::zeros_like(lines);
  R3D_LAUNCH(sample_vm_features_bwd_kernel, n * 3 * c, grad_out.data_ptr<float>(), planes.data_ptr<float>(),
             lines.data_ptr<float>(), xyz.data_ptr<float>(), c, planes.size(2), planes.size(3), lines.size(2),
             grad_planes.data_ptr<float>(), grad_lines.data_ptr<float>());
  return {grad_planes, grad_lines};
}

}  // namespace cuda
}  // namespace relight3d
