// Ray marching through an occupancy grid: checks, then the per-ray marches of kernels.h.
//
// march_rays_train runs in two passes over the rays, like nerfacc / instant-ngp: count the kept samples of every
// ray, turn the counts into offsets (a cumulative sum), then march again and write each ray's samples at its offset
// (walking only the steps between the first and last kept ones, noted by the first pass).
#include "kernels.h"
#include "ops.h"
#include "parallel.h"

namespace relight3d {

namespace {

// rays_o, rays_d [n, 3], t and t_far [n], the grid and the step schedule; returns what the marches share.
MarchInputs march_inputs(const char* op, const Tensor& rays_o, const Tensor& rays_d, const Tensor& t,
                         const Tensor& t_far, const Tensor& bitfield, const Tensor& aabb, int64_t n_cascades,
                         int64_t res, double dt_min, double dt_max, double dt_gamma) {
  const auto dev = rays_o.device();
  R3D_CHECK(op, dev, at::kFloat, (rays_o, rays_d), -1, 3);
  R3D_CHECK(op, dev, at::kFloat, (t, t_far), rays_o.size(0));
  check_grid(op, dev, bitfield, aabb, n_cascades, res);
  TORCH_CHECK(dt_min > 0 && dt_min <= dt_max, op, ": need 0 < dt_min <= dt_max, got ", dt_min, ", ", dt_max);
  return {cptr<float>(rays_o), cptr<float>(rays_d), cptr<uint8_t>(bitfield), grid_ref(aabb, n_cascades, res),
          make_step_params(dt_min, dt_max, dt_gamma)};
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor> march_rays_train_fwd(const Tensor& rays_o, const Tensor& rays_d,
                                                        const Tensor& t_near, const Tensor& t_far,
                                                        const Tensor& bitfield, const Tensor& aabb,
                                                        int64_t n_cascades, int64_t res, double dt_min, double dt_max,
                                                        double dt_gamma, int64_t max_steps, const OptTensor& jitter) {
  const char* op = "march_rays_train";
  const auto dev = rays_o.device();
  const MarchInputs in =
      march_inputs(op, rays_o, rays_d, t_near, t_far, bitfield, aabb, n_cascades, res, dt_min, dt_max, dt_gamma);
  R3D_CHECK(op, dev, at::kFloat, (jitter), rays_o.size(0));
  TORCH_CHECK(max_steps >= 0, op, ": max_steps must be >= 0, got ", max_steps);
  const TrainRays rays{in, cptr<float>(t_near), cptr<float>(t_far), cptr<float>(jitter), max_steps};
  const at::DeviceGuard guard(dev);
  const int64_t n = rays_o.size(0);
  Tensor counts = at::zeros({n}, rays_o.options().dtype(at::kLong));
  Tensor k_first = at::empty_like(counts);
  Tensor k_last = at::empty_like(counts);
  for_each_ray(dev, n, MarchTrainCount{rays, ptr<int64_t>(counts), ptr<int64_t>(k_first), ptr<int64_t>(k_last)});
  const Tensor cum_counts = at::cumsum(counts, 0);
  const int64_t total = n > 0 ? cum_counts[n - 1].item<int64_t>() : 0;
  Tensor ray_indices = at::empty({total}, counts.options());
  Tensor t_starts = at::empty({total}, rays_o.options());
  Tensor t_ends = at::empty({total}, rays_o.options());
  if (total > 0) {
    for_each_ray(dev, n,
                 MarchTrainFill{rays, cptr<int64_t>(counts), cptr<int64_t>(cum_counts), cptr<int64_t>(k_first),
                                cptr<int64_t>(k_last), ptr<int64_t>(ray_indices), ptr<float>(t_starts),
                                ptr<float>(t_ends)});
  }
  return {ray_indices, t_starts, t_ends};
}

std::tuple<Tensor, Tensor> march_rays_inference_fwd(const Tensor& rays_o, const Tensor& rays_d, const Tensor& t,
                                                    const Tensor& t_far, const Tensor& alive, const Tensor& bitfield,
                                                    const Tensor& aabb, int64_t n_cascades, int64_t res,
                                                    double dt_min, double dt_max, double dt_gamma, int64_t n_steps,
                                                    int64_t max_candidates) {
  const char* op = "march_rays_inference";
  const auto dev = rays_o.device();
  const MarchInputs in =
      march_inputs(op, rays_o, rays_d, t, t_far, bitfield, aabb, n_cascades, res, dt_min, dt_max, dt_gamma);
  R3D_CHECK(op, dev, at::kLong, (alive), -1);
  TORCH_CHECK(n_steps >= 1, op, ": n_steps must be >= 1, got ", n_steps);
  TORCH_CHECK(max_candidates >= 1, op, ": max_candidates must be >= 1, got ", max_candidates);
  const at::DeviceGuard guard(dev);
  const int64_t a = alive.size(0);
  Tensor t_starts = at::empty({a, n_steps}, rays_o.options());
  Tensor t_ends = at::empty({a, n_steps}, rays_o.options());
  for_each_ray(dev, a,
               MarchInference{in, ptr<float>(t), cptr<float>(t_far), cptr<int64_t>(alive), rays_o.size(0), n_steps,
                              max_candidates, ptr<float>(t_starts), ptr<float>(t_ends)});
  return {t_starts, t_ends};
}

}  // namespace relight3d
