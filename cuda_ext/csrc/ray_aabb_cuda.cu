// ray_aabb_intersect: CUDA kernel.
#include "common.h"
#include "cuda_utils.cuh"
#include "ops.h"

namespace relight3d {
namespace cuda {

namespace {

__global__ void ray_aabb_kernel(int64_t n, const float* __restrict__ o, const float* __restrict__ d,
                                const float* __restrict__ aabb, float near_min, float* __restrict__ t_near,
                                float* __restrict__ t_far) {
  const int64_t i = thread_index(n);
  if (i < 0) return;
  ray_aabb(o + 3 * i, d + 3 * i, aabb, near_min, t_near + i, t_far + i);
}

}  // namespace

std::tuple<Tensor, Tensor> ray_aabb_intersect_fwd(const Tensor& rays_o, const Tensor& rays_d, const Tensor& aabb,
                                                  double near_min) {
  const c10::cuda::CUDAGuard guard(rays_o.device());
  const int64_t n = rays_o.size(0);
  Tensor t_near = at::empty({n}, rays_o.options());
  Tensor t_far = at::empty({n}, rays_o.options());
  R3D_LAUNCH(ray_aabb_kernel, n, rays_o.data_ptr<float>(), rays_d.data_ptr<float>(), aabb.data_ptr<float>(),
             static_cast<float>(near_min), t_near.data_ptr<float>(), t_far.data_ptr<float>());
  return {t_near, t_far};
}

}  // namespace cuda
}  // namespace relight3d
