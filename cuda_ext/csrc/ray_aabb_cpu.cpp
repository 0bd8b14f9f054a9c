// ray_aabb_intersect: CPU kernel.
#include "common.h"
#include "cpu_utils.h"
#include "ops.h"

namespace relight3d {
namespace cpu {

std::tuple<Tensor, Tensor> ray_aabb_intersect_fwd(const Tensor& rays_o, const Tensor& rays_d, const Tensor& aabb,
                                                  double near_min) {
  const int64_t n = rays_o.size(0);
  Tensor t_near = at::empty({n}, rays_o.options());
  Tensor t_far = at::empty({n}, rays_o.options());
  const float* o = rays_o.data_ptr<float>();
  const float* d = rays_d.data_ptr<float>();
  const float* box = aabb.data_ptr<float>();
  float* tn = t_near.data_ptr<float>();
  float* tf = t_far.data_ptr<float>();
  const float nmin = static_cast<float>(near_min);
  at::parallel_for(0, n, kGrainElementwise / 8, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) ray_aabb(o + 3 * i, d + 3 * i, box, nmin, tn + i, tf + i);
  });
  return {t_near, t_far};
}

}  // namespace cpu
}  // namespace relight3d
