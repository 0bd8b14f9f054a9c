// ray_aabb_intersect: checks and dispatch.
#include "checks.h"
#include "ops.h"

namespace relight3d {

std::tuple<Tensor, Tensor> ray_aabb_intersect_fwd(const Tensor& rays_o, const Tensor& rays_d, const Tensor& aabb,
                                                  double near_min) {
  const char* op = "ray_aabb_intersect";
  const auto dev = rays_o.device();
  check_input(rays_o, op, "rays_o", at::kFloat, dev);
  check_input(rays_d, op, "rays_d", at::kFloat, dev);
  check_input(aabb, op, "aabb", at::kFloat, dev);
  const int64_t n = rays_o.size(0);
  check_shape(rays_o, op, "rays_o", {n, 3});
  check_shape(rays_d, op, "rays_d", {n, 3});
  check_shape(aabb, op, "aabb", {6});
  R3D_DISPATCH(dev, ray_aabb_intersect_fwd, rays_o, rays_d, aabb, near_min);
}

}  // namespace relight3d
