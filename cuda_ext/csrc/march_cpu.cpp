// Ray marching: CPU kernels.
//
// march_rays_train runs in two passes over the rays, like nerfacc / instant-ngp: count the kept samples of every
// ray, turn the counts into offsets, then march again and write each ray's samples at its offset (walking only the
// steps between the first and last kept ones, noted by the first pass). Both passes are parallel over rays
// (dynamically scheduled blocks of rays).
#include "common.h"
#include "cpu_utils.h"
#include "ops.h"

#include <vector>

namespace relight3d {
namespace cpu {

std::tuple<Tensor, Tensor, Tensor> march_rays_train_fwd(const Tensor& rays_o, const Tensor& rays_d,
                                                        const Tensor& t_near, const Tensor& t_far,
                                                        const Tensor& bitfield, const Tensor& aabb,
                                                        int64_t n_cascades, int64_t res, double dt_min, double dt_max,
                                                        double dt_gamma, int64_t max_steps, const OptTensor& jitter) {
  const int64_t n = rays_o.size(0);
  const StepParams p = make_step_params(dt_min, dt_max, dt_gamma);
  const GridGeom g = make_grid_geom(aabb.data_ptr<float>(), static_cast<int>(n_cascades), static_cast<int>(res));
  const float* o = rays_o.data_ptr<float>();
  const float* d = rays_d.data_ptr<float>();
  const float* tn = t_near.data_ptr<float>();
  const float* tf = t_far.data_ptr<float>();
  const float* jit = jitter.has_value() ? jitter->data_ptr<float>() : nullptr;
  const uint8_t* bits = bitfield.data_ptr<uint8_t>();

  // pass 1: count, and note each ray's first and last kept step
  std::vector<int64_t> offsets(n + 1, 0), k_first(n), k_last(n);
  parallel_dynamic(n, kGrainRays, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      KeptRange range;
      offsets[r + 1] = march_train_ray(p, g, bits, o + 3 * r, d + 3 * r, tn[r], tf[r], jit ? jit[r] : 0.0f,
                                       max_steps, 0, max_steps, range);
      k_first[r] = range.first;
      k_last[r] = range.last;
    }
  });
  for (int64_t r = 0; r < n; ++r) offsets[r + 1] += offsets[r];
  const int64_t total = offsets[n];

  // pass 2: fill, walking only the steps between the first and last kept ones
  Tensor ray_indices = at::empty({total}, rays_o.options().dtype(at::kLong));
  Tensor t_starts = at::empty({total}, rays_o.options());
  Tensor t_ends = at::empty({total}, rays_o.options());
  int64_t* ri = ray_indices.data_ptr<int64_t>();
  float* ts = t_starts.data_ptr<float>();
  float* te = t_ends.data_ptr<float>();
  parallel_dynamic(n, kGrainRays, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      if (offsets[r + 1] == offsets[r]) continue;
      const int64_t base = offsets[r];
      march_train_ray(p, g, bits, o + 3 * r, d + 3 * r, tn[r], tf[r], jit ? jit[r] : 0.0f, max_steps, k_first[r],
                      k_last[r] + 1, [&](int64_t slot, int64_t, float t0, float t1) {
                        ri[base + slot] = r;
                        ts[base + slot] = t0;
                        te[base + slot] = t1;
                      });
    }
  });
  return {ray_indices, t_starts, t_ends};
}

std::tuple<Tensor, Tensor> march_rays_inference_fwd(const Tensor& rays_o, const Tensor& rays_d, const Tensor& t,
                                                    const Tensor& t_far, const Tensor& alive, const Tensor& bitfield,
                                                    const Tensor& aabb, int64_t n_cascades, int64_t res,
                                                    double dt_min, double dt_max, double dt_gamma, int64_t n_steps,
                                                    int64_t max_candidates) {
  const int64_t n = rays_o.size(0), a = alive.size(0);
  const StepParams p = make_step_params(dt_min, dt_max, dt_gamma);
  const GridGeom g = make_grid_geom(aabb.data_ptr<float>(), static_cast<int>(n_cascades), static_cast<int>(res));
  Tensor t_starts = at::empty({a, n_steps}, rays_o.options());
  Tensor t_ends = at::empty({a, n_steps}, rays_o.options());
  const float* o = rays_o.data_ptr<float>();
  const float* d = rays_d.data_ptr<float>();
  float* tc = t.data_ptr<float>();
  const float* tf = t_far.data_ptr<float>();
  const int64_t* al = alive.data_ptr<int64_t>();
  const uint8_t* bits = bitfield.data_ptr<uint8_t>();
  float* ts = t_starts.data_ptr<float>();
  float* te = t_ends.data_ptr<float>();
  parallel_dynamic(a, kGrainRays, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t r = al[i];
      TORCH_CHECK(r >= 0 && r < n, "march_rays_inference: alive ray ", r, " out of range [0, ", n, ")");
      tc[r] = march_inference_ray(p, g, bits, o + 3 * r, d + 3 * r, tc[r], tf[r], n_steps, max_candidates,
                                  ts + i * n_steps, te + i * n_steps);
    }
  });
  return {t_starts, t_ends};
}

}  // namespace cpu
}  // namespace relight3d
