// Ray marching: CUDA kernels. march_rays_train runs in two passes, one thread per ray: count the kept samples,
// turn the counts into offsets (a cumulative sum), then march again and write each ray's samples at its offset
// (walking only the steps between the first and last kept ones, noted by the first pass).
#include "common.h"
#include "cuda_utils.cuh"
#include "ops.h"

namespace relight3d {
namespace cuda {

namespace {

struct WriteSamples {
  int64_t base, ray;
  int64_t* ray_indices;
  float* t_starts;
  float* t_ends;
  __host__ __device__ void operator()(int64_t slot, int64_t, float t0, float t1) const {
    ray_indices[base + slot] = ray;
    t_starts[base + slot] = t0;
    t_ends[base + slot] = t1;
  }
};

__global__ void march_count_kernel(int64_t n, const float* __restrict__ o, const float* __restrict__ d,
                                   const float* __restrict__ t_near, const float* __restrict__ t_far,
                                   const float* __restrict__ jitter, const uint8_t* __restrict__ bits,
                                   const float* __restrict__ aabb, int n_cascades, int res, StepParams p,
                                   int64_t max_steps, int64_t* __restrict__ counts, int64_t* __restrict__ k_first,
                                   int64_t* __restrict__ k_last) {
  const int64_t r = thread_index(n);
  if (r < 0) return;
  const GridGeom g = make_grid_geom(aabb, n_cascades, res);
  KeptRange range;
  counts[r] = march_train_ray(p, g, bits, o + 3 * r, d + 3 * r, t_near[r], t_far[r],
                              jitter != nullptr ? jitter[r] : 0.0f, max_steps, 0, max_steps, range);
  k_first[r] = range.first;
  k_last[r] = range.last;
}

__global__ void march_fill_kernel(int64_t n, const float* __restrict__ o, const float* __restrict__ d,
                                  const float* __restrict__ t_near, const float* __restrict__ t_far,
                                  const float* __restrict__ jitter, const uint8_t* __restrict__ bits,
                                  const float* __restrict__ aabb, int n_cascades, int res, StepParams p,
                                  int64_t max_steps, const int64_t* __restrict__ counts,
                                  const int64_t* __restrict__ cum_counts, const int64_t* __restrict__ k_first,
                                  const int64_t* __restrict__ k_last, int64_t* __restrict__ ray_indices,
                                  float* __restrict__ t_starts, float* __restrict__ t_ends) {
  const int64_t r = thread_index(n);
  if (r < 0 || counts[r] == 0) return;
  const GridGeom g = make_grid_geom(aabb, n_cascades, res);
  const WriteSamples write{cum_counts[r] - counts[r], r, ray_indices, t_starts, t_ends};
  march_train_ray(p, g, bits, o + 3 * r, d + 3 * r, t_near[r], t_far[r], jitter != nullptr ? jitter[r] : 0.0f,
                  max_steps, k_first[r], k_last[r] + 1, write);
}

__global__ void march_inference_kernel(int64_t a, const float* __restrict__ o, const float* __restrict__ d,
                                       float* __restrict__ t, const float* __restrict__ t_far,
                                       const int64_t* __restrict__ alive, int64_t n_rays,
                                       const uint8_t* __restrict__ bits, const float* __restrict__ aabb,
                                       int n_cascades, int res, StepParams p, int64_t n_steps, int64_t max_candidates,
                                       float* __restrict__ t_starts, float* __restrict__ t_ends) {
  const int64_t i = thread_index(a);
  if (i < 0) return;
  const int64_t r = alive[i];
  float* ts = t_starts + i * n_steps;
  float* te = t_ends + i * n_steps;
  if (r < 0 || r >= n_rays) {
    for (int64_t k = 0; k < n_steps; ++k) ts[k] = te[k] = 0.0f;
    return;
  }
  const GridGeom g = make_grid_geom(aabb, n_cascades, res);
  t[r] = march_inference_ray(p, g, bits, o + 3 * r, d + 3 * r, t[r], t_far[r], n_steps, max_candidates, ts, te);
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor> march_rays_train_fwd(const Tensor& rays_o, const Tensor& rays_d,
                                                        const Tensor& t_near, const Tensor& t_far,
                                                        const Tensor& bitfield, const Tensor& aabb,
                                                        int64_t n_cascades, int64_t res, double dt_min, double dt_max,
                                                        double dt_gamma, int64_t max_steps, const OptTensor& jitter) {
  const c10::cuda::CUDAGuard guard(rays_o.device());
  const int64_t n = rays_o.size(0);
  const StepParams p = make_step_params(dt_min, dt_max, dt_gamma);
  const float* jit = jitter.has_value() ? jitter->data_ptr<float>() : nullptr;
  const int nc = static_cast<int>(n_cascades), rs = static_cast<int>(res);
  Tensor counts = at::zeros({n}, rays_o.options().dtype(at::kLong));
  Tensor k_first = at::empty({n}, counts.options());
  Tensor k_last = at::empty({n}, counts.options());
  R3D_LAUNCH(march_count_kernel, n, rays_o.data_ptr<float>(), rays_d.data_ptr<float>(), t_near.data_ptr<float>(),
             t_far.data_ptr<float>(), jit, bitfield.data_ptr<uint8_t>(), aabb.data_ptr<float>(), nc, rs, p, max_steps,
             counts.data_ptr<int64_t>(), k_first.data_ptr<int64_t>(), k_last.data_ptr<int64_t>());
  Tensor cum_counts = at::cumsum(counts, 0);
  const int64_t total = n > 0 ? cum_counts[n - 1].item<int64_t>() : 0;
  Tensor ray_indices = at::empty({total}, rays_o.options().dtype(at::kLong));
  Tensor t_starts = at::empty({total}, rays_o.options());
  Tensor t_ends = at::empty({total}, rays_o.options());
  if (total > 0) {
    R3D_LAUNCH(march_fill_kernel, n, rays_o.data_ptr<float>(), rays_d.data_ptr<float>(), t_near.data_ptr<float>(),
               t_far.data_ptr<float>(), jit, bitfield.data_ptr<uint8_t>(), aabb.data_ptr<float>(), nc, rs, p,
               max_steps, counts.data_ptr<int64_t>(), cum_counts.data_ptr<int64_t>(), k_first.data_ptr<int64_t>(),
               k_last.data_ptr<int64_t>(), ray_indices.data_ptr<int64_t>(),
               t_starts.data_ptr<float>(), t_ends.data_ptr<float>());
  }
  return {ray_indices, t_starts, t_ends};
}

std::tuple<Tensor, Tensor> march_rays_inference_fwd(const Tensor& rays_o, const Tensor& rays_d, const Tensor& t,
                                                    const Tensor& t_far, const Tensor& alive, const Tensor& bitfield,
                                                    const Tensor& aabb, int64_t n_cascades, int64_t res,
                                                    double dt_min, double dt_max, double dt_gamma, int64_t n_steps,
                                                    int64_t max_candidates) {
  const c10::cuda::CUDAGuard guard(rays_o.device());
  const int64_t n = rays_o.size(0), a = alive.size(0);
  const StepParams p = make_step_params(dt_min, dt_max, dt_gamma);
  Tensor t_starts = at::empty({a, n_steps}, rays_o.options());
  Tensor t_ends = at::empty({a, n_steps}, rays_o.options());
  R3D_LAUNCH(march_inference_kernel, a, rays_o.data_ptr<float>(), rays_d.data_ptr<float>(), t.data_ptr<float>(),
             t_far.data_ptr<float>(), alive.data_ptr<int64_t>(), n, bitfield.data_ptr<uint8_t>(),
             aabb.data_ptr<float>(), static_cast<int>(n_cascades), static_cast<int>(res), p, n_steps, max_candidates,
             t_starts.data_ptr<float>(), t_ends.data_ptr<float>());
  return {t_starts, t_ends};
}

}  // namespace cuda
}  // namespace relight3d
