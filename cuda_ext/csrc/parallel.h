// Loops over the items of an op on the device of its tensors: at::parallel_for on the CPU, one CUDA thread per item
// on the GPU. The work per item is a functor of kernels.h, the same code on both devices; only these loops differ.
//
// The CUDA versions are declared here and defined in parallel_cuda.cuh; kernels_cuda.cu instantiates them for every
// functor (a functor missing there shows as an undefined symbol when relight3d._C is imported).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>

#include "checks.h"

namespace relight3d {

// CPU grain sizes: below these, at::parallel_for runs inline on the calling thread.
constexpr int64_t kGrainElementwise = 32768;
constexpr int64_t kGrainRays = 64;
constexpr int64_t kGrainSamples = 8192;
constexpr int64_t kSerial = std::numeric_limits<int64_t>::max();  // one thread (scatters without atomics)

#ifdef WITH_CUDA
namespace cuda {
template <typename F>
void for_each(int64_t n, const F& f);
template <typename F>
void for_each_segment(const at::Tensor& ray_indices, int64_t n_rays, const F& f);
}  // namespace cuda
#endif

namespace cpu {

// Calls f(begin, end) on blocks of [0, n) of `block` items, handed out dynamically to the threads of
// at::parallel_for. For per-ray loops whose cost varies a lot between rays (a ray that misses the box costs nothing,
// one through a dense region ~max_steps lookups): with at::parallel_for's one contiguous chunk per thread, an image's
// empty top half would leave one thread idle.
template <typename F>
void parallel_dynamic(int64_t n, int64_t block, const F& f) {
  if (n <= 0) return;
  const int64_t n_blocks = (n + block - 1) / block;
  const int64_t n_workers = std::min<int64_t>(at::get_num_threads(), n_blocks);
  if (n_workers <= 1 || at::in_parallel_region()) {
    f(0, n);
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, n_workers, 1, [&](int64_t, int64_t) {
    for (int64_t b = next.fetch_add(1); b < n_blocks; b = next.fetch_add(1)) f(b * block, std::min(n, (b + 1) * block));
  });
}

// Calls f(ray, begin, end) for every run [begin, end) of packed samples of one ray, in parallel. Each chunk of
// at::parallel_for starts at the first run that begins inside it and finishes its last run past its end, so every
// run is handled once, by one thread. Raises unless the ray indices are sorted and in [0, n_rays).
template <typename F>
void parallel_ray_segments(const int64_t* ray, int64_t n_samples, int64_t n_rays, const char* op, const F& f) {
  at::parallel_for(0, n_samples, kGrainSamples, [&](int64_t chunk_begin, int64_t chunk_end) {
    int64_t i = chunk_begin;
    while (i > 0 && i < chunk_end && ray[i] == ray[i - 1]) ++i;
    while (i < chunk_end) {
      const int64_t r = ray[i];
      TORCH_CHECK(r >= 0 && r < n_rays, op, ": ray index ", r, " out of range [0, ", n_rays, ")");
      TORCH_CHECK(i == 0 || ray[i - 1] < r, op, ": ray_indices must be sorted (samples of a ray contiguous)");
      int64_t j = i + 1;
      while (j < n_samples && ray[j] == r) ++j;
      f(r, i, j);
      i = j;
    }
  });
}

}  // namespace cpu

// f(i) for every i in [0, n); on the CPU in chunks of at least `cpu_grain` items (kSerial: on this thread, in order).
template <typename F>
void for_each(const at::Device& device, int64_t n, int64_t cpu_grain, const F& f) {
  if (use_cuda(device)) {
#ifdef WITH_CUDA
    cuda::for_each(n, f);
#endif
    return;
  }
  at::parallel_for(0, n, cpu_grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) f(i);
  });
}

// f(r) for every ray r in [0, n), rays whose cost varies a lot: dynamically scheduled blocks on the CPU.
template <typename F>
void for_each_ray(const at::Device& device, int64_t n, const F& f) {
  if (use_cuda(device)) {
#ifdef WITH_CUDA
    cuda::for_each(n, f);
#endif
    return;
  }
  cpu::parallel_dynamic(n, kGrainRays, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) f(r);
  });
}

// f(r, begin, end) for the run [begin, end) of packed samples of every ray r with samples; ray_indices must be
// sorted. The CPU loop raises on unsorted or out-of-range indices; on CUDA, samples with an index outside
// [0, n_rays) are skipped, and rays without samples get f(r, 0, 0).
template <typename F>
void for_each_segment(const at::Tensor& ray_indices, int64_t n_rays, const char* op, const F& f) {
  if (use_cuda(ray_indices.device())) {
#ifdef WITH_CUDA
    cuda::for_each_segment(ray_indices, n_rays, f);
#endif
    return;
  }
  cpu::parallel_ray_segments(ray_indices.data_ptr<int64_t>(), ray_indices.size(0), n_rays, op, f);
}

}  // namespace relight3d
