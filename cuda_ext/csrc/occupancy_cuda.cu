// occupancy_grid_update: the CUDA algorithm (two passes with atomics). The CPU one is in occupancy_cpu.cpp.
#include "common.h"
#include "ops.h"
#include "parallel_cuda.cuh"

namespace relight3d {
namespace cuda {

namespace {

// pass 1 of the EMA update: touched cells (grid >= 0) get grid * decay (duplicates write the same value)
__global__ void grid_decay_kernel(int64_t n, const int64_t* __restrict__ indices, const float* __restrict__ grid,
                                  int64_t m, float decay, float* __restrict__ out) {
  const int64_t k = thread_index(n);
  if (k < 0) return;
  const int64_t i = indices[k];
  if (i < 0 || i >= m) return;
  if (grid[i] >= 0.0f) out[i] = grid[i] * decay;
}

// pass 2: out = max(out, value)
__global__ void grid_max_kernel(int64_t n, const int64_t* __restrict__ indices, const float* __restrict__ values,
                                const float* __restrict__ grid, int64_t m, float* __restrict__ out) {
  const int64_t k = thread_index(n);
  if (k < 0) return;
  const int64_t i = indices[k];
  if (i < 0 || i >= m) return;
  if (grid[i] >= 0.0f) atomic_max_float(out + i, values[k]);
}

}  // namespace

Tensor occupancy_grid_update_fwd(const Tensor& density_grid, const Tensor& indices, const Tensor& values,
                                 double decay) {
  const c10::cuda::CUDAGuard guard(density_grid.device());
  Tensor out = density_grid.clone();
  const int64_t n = indices.size(0), m = density_grid.numel();
  R3D_LAUNCH(grid_decay_kernel, n, indices.data_ptr<int64_t>(), density_grid.data_ptr<float>(), m,
             static_cast<float>(decay), out.data_ptr<float>());
  R3D_LAUNCH(grid_max_kernel, n, indices.data_ptr<int64_t>(), values.data_ptr<float>(), density_grid.data_ptr<float>(),
             m, out.data_ptr<float>());
  return out;
}

}  // namespace cuda
}  // namespace relight3d
