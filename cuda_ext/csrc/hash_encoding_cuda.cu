// Multiresolution hash encoding: CUDA kernels (see hash_encoding.h for what is computed).
//
// One thread per (point, level), the level in blockIdx.y, so that a warp's threads work on consecutive points of one
// level (one branch for dense or hashed, nearby rows for nearby points). Every kernel runs the arithmetic of
// hash_encoding.h, as the CPU kernels do. The forward and the double backward's gradient w.r.t. grad_out write
// their own (point, level) entries; the scatters into the table and the sums over levels into the position
// gradients use atomicAdd, as tinycudann's backward does (so the order of the additions, hence the last bits of the
// gradients, varies from run to run). Table and gradients are float32 (no half-precision storage).
#include <math_constants.h>

#include "hash_encoding.h"
#include "parallel_cuda.cuh"

namespace relight3d {
namespace cuda {

using at::Tensor;

namespace {

// The (point, level) of this thread, false past the last point.
__device__ __forceinline__ bool point_and_level(int64_t n, int64_t* i, int* l) {
  *i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  *l = static_cast<int>(blockIdx.y);
  return *i < n;
}

// rows[row_c, k] += weight_c g[k] for the 8 corners, atomically (other points share the rows); zeros of g skipped.
template <int kF>
__device__ __forceinline__ void scatter_to_corners(float* rows, const HashCell& cell, const float* weight,
                                                   const float* g, int nf) {
  const int F = kF > 0 ? kF : nf;
  for (int c = 0; c < 8; ++c) {
    for (int k = 0; k < F; ++k) {
      if (g[k] != 0.0f) atomicAdd(rows + static_cast<int64_t>(cell.row[c]) * F + k, weight[c] * g[k]);
    }
  }
}

// out[0..2] += acc * mask, atomically (the levels of a point add to the same entries); zeros skipped.
__device__ __forceinline__ void add_to_point(float* out, const float* acc, const float* mask) {
  for (int d = 0; d < 3; ++d) {
    if (acc[d] * mask[d] != 0.0f) atomicAdd(out + d, acc[d] * mask[d]);
  }
}

template <int kF>
__global__ void hash_encoding_fwd_kernel(int64_t n, const float* __restrict__ x, const float* __restrict__ table,
                                         const HashLevels lv, int nf, float* __restrict__ out) {
  int64_t i;
  int l;
  if (!point_and_level(n, &i, &l)) return;
  const int F = kF > 0 ? kF : nf;
  float* o = out + (i * lv.n_levels + l) * F;
  float xc[3], mask[3];
  if (!clamp_point(x + 3 * i, xc, mask)) {
    for (int k = 0; k < F; ++k) o[k] = CUDART_NAN_F;
    return;
  }
  HashCell cell;
  hash_cell(lv, l, xc, &cell);
  encode_level<kF>(table + lv.offset[l] * F, cell, nf, o);
}

template <int kF>
__global__ void hash_encoding_bwd_kernel(int64_t n, const float* __restrict__ g, const float* __restrict__ x,
                                         const float* __restrict__ table, const HashLevels lv, int nf,
                                         float* __restrict__ grad_table, float* __restrict__ grad_x) {
  int64_t i;
  int l;
  if (!point_and_level(n, &i, &l)) return;
  const int F = kF > 0 ? kF : nf;
  const float* gi = g + (i * lv.n_levels + l) * F;
  float xc[3], mask[3];
  if (!clamp_point(x + 3 * i, xc, mask)) return;
  HashCell cell;
  hash_cell(lv, l, xc, &cell);
  if (grad_table != nullptr) {
    float w[8];
    corner_weights(cell.frac, w);
    scatter_to_corners<kF>(grad_table + lv.offset[l] * F, cell, w, gi, nf);
  }
  if (grad_x != nullptr) {
    float dot[8], acc[3] = {0.0f, 0.0f, 0.0f};
    corner_dots<kF>(table + lv.offset[l] * F, cell, gi, nf, dot);
    add_position_gradient(dot, cell.frac, lv.scale[l], acc);
    add_to_point(grad_x + 3 * i, acc, mask);
  }
}

template <int kF>
__global__ void hash_encoding_bwd_bwd_kernel(int64_t n, const float* __restrict__ v, const float* __restrict__ g,
                                             const float* __restrict__ x, const float* __restrict__ table,
                                             const HashLevels lv, int nf, float* __restrict__ dg,
                                             float* __restrict__ dtable, float* __restrict__ dx) {
  int64_t i;
  int l;
  if (!point_and_level(n, &i, &l)) return;
  const int F = kF > 0 ? kF : nf;
  float xc[3], mask[3], u[3];
  if (!clamp_point(x + 3 * i, xc, mask)) return;
  for (int d = 0; d < 3; ++d) u[d] = v[3 * i + d] * mask[d] * lv.scale[l];
  if (u[0] == 0.0f && u[1] == 0.0f && u[2] == 0.0f) return;
  HashCell cell;
  hash_cell(lv, l, xc, &cell);
  const float* rows = table + lv.offset[l] * F;
  const float* gi = g + (i * lv.n_levels + l) * F;
  float b[8];
  directional_weights(cell.frac, u, b);
  if (dg != nullptr) {
    float* o = dg + (i * lv.n_levels + l) * F;
    for (int k = 0; k < F; ++k) {
      float s = 0.0f;
      for (int c = 0; c < 8; ++c) s += rows[static_cast<int64_t>(cell.row[c]) * F + k] * b[c];
      o[k] = s;
    }
  }
  if (dtable != nullptr) scatter_to_corners<kF>(dtable + lv.offset[l] * F, cell, b, gi, nf);
  if (dx != nullptr) {
    float dot[8], acc[3] = {0.0f, 0.0f, 0.0f};
    corner_dots<kF>(rows, cell, gi, nf, dot);
    add_position_second_derivative(dot, cell.frac, u, lv.scale[l], acc);
    add_to_point(dx + 3 * i, acc, mask);
  }
}

// Launch `kernel` with one thread per (point, level) on the current stream.
template <typename Kernel, typename... Args>
void launch_points_levels(Kernel kernel, int64_t n, int levels, Args... args) {
  if (n == 0) return;
  const dim3 grid(n_blocks(n), static_cast<unsigned int>(levels));
  kernel<<<grid, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(n, args...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T>
T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

}  // namespace

Tensor hash_encoding_fwd(const Tensor& positions, const Tensor& table, const HashLevels& levels) {
  const c10::cuda::CUDAGuard guard(positions.device());
  const int64_t n = positions.size(0), nf = table.size(1);
  Tensor out = at::empty({n, levels.n_levels * nf}, table.options());
  if (nf == 0) return out;
  with_features(nf, [&](auto f) {
    launch_points_levels(hash_encoding_fwd_kernel<decltype(f)::value>, n, levels.n_levels,
                         positions.data_ptr<float>(), table.data_ptr<float>(), levels, static_cast<int>(nf),
                         out.data_ptr<float>());
  });
  return out;
}

std::tuple<Tensor, Tensor> hash_encoding_bwd(const Tensor& grad_out, const Tensor& positions, const Tensor& table,
                                             const HashLevels& levels, bool need_table, bool need_positions) {
  const c10::cuda::CUDAGuard guard(positions.device());
  const int64_t n = positions.size(0), nf = table.size(1);
  Tensor grad_table = need_table ? at::zeros_like(table) : Tensor();
  Tensor grad_positions = need_positions ? at::zeros_like(positions) : Tensor();
  if (nf == 0 || !(need_table || need_positions)) return {grad_table, grad_positions};
  with_features(nf, [&](auto f) {
    launch_points_levels(hash_encoding_bwd_kernel<decltype(f)::value>, n, levels.n_levels,
                         grad_out.data_ptr<float>(), positions.data_ptr<float>(), table.data_ptr<float>(), levels,
                         static_cast<int>(nf), ptr_or_null<float>(grad_table), ptr_or_null<float>(grad_positions));
  });
  return {grad_table, grad_positions};
}

std::tuple<Tensor, Tensor, Tensor> hash_encoding_bwd_bwd(const Tensor& grad_grad_positions, const Tensor& grad_out,
                                                         const Tensor& positions, const Tensor& table,
                                                         const HashLevels& levels, bool need_grad_out,
                                                         bool need_table, bool need_positions) {
  const c10::cuda::CUDAGuard guard(positions.device());
  const int64_t n = positions.size(0), nf = table.size(1);
  Tensor dg = need_grad_out ? at::zeros_like(grad_out) : Tensor();
  Tensor dtable = need_table ? at::zeros_like(table) : Tensor();
  Tensor dx = need_positions ? at::zeros_like(positions) : Tensor();
  if (nf == 0 || !(need_grad_out || need_table || need_positions)) return {dg, dtable, dx};
  with_features(nf, [&](auto f) {
    launch_points_levels(hash_encoding_bwd_bwd_kernel<decltype(f)::value>, n, levels.n_levels,
                         grad_grad_positions.data_ptr<float>(), grad_out.data_ptr<float>(),
                         positions.data_ptr<float>(), table.data_ptr<float>(), levels, static_cast<int>(nf),
                         ptr_or_null<float>(dg), ptr_or_null<float>(dtable), ptr_or_null<float>(dx));
  });
  return {dg, dtable, dx};
}

}  // namespace cuda
}  // namespace relight3d
