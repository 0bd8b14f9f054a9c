// ray_aabb_intersect: checks, then the slab test of common.h on every ray (kernels.h: RayAabb).
#include "kernels.h"
#include "ops.h"
#include "parallel.h"

namespace relight3d {

std::tuple<Tensor, Tensor> ray_aabb_intersect_fwd(const Tensor& rays_o, const Tensor& rays_d, const Tensor& aabb,
                                                  double near_min) {
  const char* op = "ray_aabb_intersect";
  const auto dev = rays_o.device();
  R3D_CHECK(op, dev, at::kFloat, (rays_o, rays_d), -1, 3);
  R3D_CHECK(op, dev, at::kFloat, (aabb), 6);
  const at::DeviceGuard guard(dev);
  const int64_t n = rays_o.size(0);
  Tensor t_near = at::empty({n}, rays_o.options());
  Tensor t_far = at::empty({n}, rays_o.options());
  for_each(dev, n, kGrainElementwise / 8,
           RayAabb{cptr<float>(rays_o), cptr<float>(rays_d), cptr<float>(aabb), static_cast<float>(near_min),
                   ptr<float>(t_near), ptr<float>(t_far)});
  return {t_near, t_far};
}

}  // namespace relight3d
