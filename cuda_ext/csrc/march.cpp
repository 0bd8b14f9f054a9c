// Ray marching through an occupancy grid (training: packed samples; inference: a few samples per alive ray):
// checks and dispatch.
#include "checks.h"
#include "ops.h"

namespace relight3d {

namespace {

void check_march_common(const char* op, const Tensor& rays_o, const Tensor& rays_d, const Tensor& t,
                        const Tensor& t_far, const Tensor& bitfield, const Tensor& aabb, int64_t n_cascades,
                        int64_t res, double dt_min, double dt_max) {
  const auto dev = rays_o.device();
  check_input(rays_o, op, "rays_o", at::kFloat, dev);
  check_input(rays_d, op, "rays_d", at::kFloat, dev);
  check_input(t, op, "t", at::kFloat, dev);
  check_input(t_far, op, "t_far", at::kFloat, dev);
  check_input(bitfield, op, "bitfield", at::kByte, dev);
  check_input(aabb, op, "aabb", at::kFloat, dev);
  const int64_t n = rays_o.size(0);
  check_shape(rays_o, op, "rays_o", {n, 3});
  check_shape(rays_d, op, "rays_d", {n, 3});
  check_shape(t, op, "t", {n});
  check_shape(t_far, op, "t_far", {n});
  check_shape(aabb, op, "aabb", {6});
  TORCH_CHECK(res > 0 && res <= 1024 && res % 2 == 0, op, ": res must be even and in (0, 1024], got ", res);
  TORCH_CHECK(n_cascades >= 1 && n_cascades <= 30, op, ": n_cascades must be in [1, 30], got ", n_cascades);
  check_shape(bitfield, op, "bitfield", {n_cascades * res * res * res / 8});
  TORCH_CHECK(dt_min > 0 && dt_min <= dt_max, op, ": need 0 < dt_min <= dt_max, got ", dt_min, ", ", dt_max);
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor> march_rays_train_fwd(const Tensor& rays_o, const Tensor& rays_d,
                                                        const Tensor& t_near, const Tensor& t_far,
                                                        const Tensor& bitfield, const Tensor& aabb,
                                                        int64_t n_cascades, int64_t res, double dt_min, double dt_max,
                                                        double dt_gamma, int64_t max_steps, const OptTensor& jitter) {
  const char* op = "march_rays_train";
  check_march_common(op, rays_o, rays_d, t_near, t_far, bitfield, aabb, n_cascades, res, dt_min, dt_max);
  if (jitter.has_value()) {
    check_input(*jitter, op, "jitter", at::kFloat, rays_o.device());
    check_shape(*jitter, op, "jitter", {rays_o.size(0)});
  }
  TORCH_CHECK(max_steps >= 0, op, ": max_steps must be >= 0, got ", max_steps);
  R3D_DISPATCH(rays_o.device(), march_rays_train_fwd, rays_o, rays_d, t_near, t_far, bitfield, aabb, n_cascades, res,
               dt_min, dt_max, dt_gamma, max_steps, jitter);
}

std::tuple<Tensor, Tensor> march_rays_inference_fwd(const Tensor& rays_o, const Tensor& rays_d, const Tensor& t,
                                                    const Tensor& t_far, const Tensor& alive, const Tensor& bitfield,
                                                    const Tensor& aabb, int64_t n_cascades, int64_t res,
                                                    double dt_min, double dt_max, double dt_gamma, int64_t n_steps,
                                                    int64_t max_candidates) {
  const char* op = "march_rays_inference";
  check_march_common(op, rays_o, rays_d, t, t_far, bitfield, aabb, n_cascades, res, dt_min, dt_max);
  check_input(alive, op, "alive", at::kLong, rays_o.device());
  TORCH_CHECK(alive.dim() == 1, op, ": 'alive' must be 1-D, got shape ", alive.sizes());
  TORCH_CHECK(n_steps >= 1, op, ": n_steps must be >= 1, got ", n_steps);
  TORCH_CHECK(max_candidates >= 1, op, ": max_candidates must be >= 1, got ", max_candidates);
  R3D_DISPATCH(rays_o.device(), march_rays_inference_fwd, rays_o, rays_d, t, t_far, alive, bitfield, aabb,
               n_cascades, res, dt_min, dt_max, dt_gamma, n_steps, max_candidates);
}

}  // namespace relight3d
