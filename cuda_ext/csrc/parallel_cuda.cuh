// The CUDA loops of parallel.h (one thread per item, ray or row), and launch helpers for the CUDA-only kernels.
// Included by the .cu files only.
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // (not ATen/cuda/CUDAContext.h: it needs the cuBLAS/cuSPARSE headers)

#include <cstdint>

#include "parallel.h"

namespace relight3d {
namespace cuda {

constexpr int kThreads = 256;

inline unsigned int n_blocks(int64_t n) { return static_cast<unsigned int>((n + kThreads - 1) / kThreads); }

// Index of this thread, or -1 past n.
__device__ __forceinline__ int64_t thread_index(int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  return i < n ? i : -1;
}

// *addr = max(*addr, v), with NaN winning (like torch.maximum)
__device__ __forceinline__ void atomic_max_float(float* addr, float v) {
  int* bits = reinterpret_cast<int*>(addr);
  int old = *bits;
  while (true) {
    const float cur = __int_as_float(old);
    if (cur != cur) return;
    if (v == v && !(v > cur)) return;
    const int assumed = old;
    old = atomicCAS(bits, assumed, __float_as_int(v));
    if (old == assumed) return;
  }
}

}  // namespace cuda
}  // namespace relight3d

// Launch `kernel` with one thread per item (nothing when n == 0) on the current stream, and check the launch.
#define R3D_LAUNCH(kernel, n, ...)                                                                                  \
  do {                                                                                                              \
    const int64_t r3d_n = (n);                                                                                      \
    if (r3d_n > 0) {                                                                                                \
      kernel<<<::relight3d::cuda::n_blocks(r3d_n), ::relight3d::cuda::kThreads, 0,                                  \
               c10::cuda::getCurrentCUDAStream()>>>(r3d_n, __VA_ARGS__);                                             \
      C10_CUDA_KERNEL_LAUNCH_CHECK();                                                                               \
    }                                                                                                               \
  } while (0)

namespace relight3d {
namespace cuda {

template <typename F>
__global__ void for_each_kernel(int64_t n, F f) {
  const int64_t i = thread_index(n);
  if (i >= 0) f(i);
}

// [begin, end) of each ray's run of samples (0, 0 for rays without samples)
static __global__ void segment_bounds_kernel(int64_t s, const int64_t* __restrict__ ray, int64_t n_rays,
                                             int64_t* __restrict__ begin, int64_t* __restrict__ end) {
  const int64_t i = thread_index(s);
  if (i < 0) return;
  const int64_t r = ray[i];
  if (r < 0 || r >= n_rays) return;
  if (i == 0 || ray[i - 1] != r) begin[r] = i;
  if (i == s - 1 || ray[i + 1] != r) end[r] = i + 1;
}

template <typename F>
__global__ void for_each_segment_kernel(int64_t n_rays, const int64_t* __restrict__ begin,
                                        const int64_t* __restrict__ end, F f) {
  const int64_t r = thread_index(n_rays);
  if (r >= 0) f(r, begin[r], end[r]);
}

template <typename F>
void for_each(int64_t n, const F& f) {
  R3D_LAUNCH(for_each_kernel<F>, n, f);
}

template <typename F>
void for_each_segment(const at::Tensor& ray_indices, int64_t n_rays, const F& f) {
  at::Tensor begin = at::zeros({n_rays}, ray_indices.options());
  at::Tensor end = at::zeros({n_rays}, ray_indices.options());
  R3D_LAUNCH(segment_bounds_kernel, ray_indices.size(0), ray_indices.data_ptr<int64_t>(), n_rays,
             begin.data_ptr<int64_t>(), end.data_ptr<int64_t>());
  R3D_LAUNCH(for_each_segment_kernel<F>, n_rays, begin.data_ptr<int64_t>(), end.data_ptr<int64_t>(), f);
}

}  // namespace cuda
}  // namespace relight3d

// Instantiates the CUDA loops for a functor of kernels.h: for_each (items, rays) or for_each_segment (ray segments).
#define R3D_CUDA_ITEMS(F) template void cuda::for_each<F>(int64_t, const F&);
#define R3D_CUDA_SEGMENTS(F) \
  template void cuda::for_each_segment<F>(const at::Tensor&, int64_t, const F&);
