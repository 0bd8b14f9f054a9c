// Launch helpers for the CUDA kernels (one thread per element, ray or row).
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // (not ATen/cuda/CUDAContext.h: it needs the cuBLAS/cuSPARSE headers)

#include <cstdint>

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
