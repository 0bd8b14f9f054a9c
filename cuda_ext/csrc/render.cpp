// Volume rendering of packed samples (weights, accumulation, fused compositing) and front-to-back compositing for
// inference: checks and dispatch.
//
// Packed samples must be sorted by ray (all samples of a ray contiguous, front to back), as march_rays_train makes
// them; the CPU kernels check this, the CUDA kernels assume it.
#include "checks.h"
#include "ops.h"

#include <utility>

namespace relight3d {

namespace {

void check_packed(const char* op, const Tensor& sigmas, const Tensor& t_starts, const Tensor& t_ends,
                  const Tensor& ray_indices, int64_t n_rays) {
  const auto dev = sigmas.device();
  check_input(sigmas, op, "sigmas", at::kFloat, dev);
  check_input(t_starts, op, "t_starts", at::kFloat, dev);
  check_input(t_ends, op, "t_ends", at::kFloat, dev);
  check_input(ray_indices, op, "ray_indices", at::kLong, dev);
  TORCH_CHECK(sigmas.dim() == 1, op, ": 'sigmas' must be 1-D, got shape ", sigmas.sizes());
  const int64_t s = sigmas.size(0);
  check_shape(t_starts, op, "t_starts", {s});
  check_shape(t_ends, op, "t_ends", {s});
  check_shape(ray_indices, op, "ray_indices", {s});
  TORCH_CHECK(n_rays >= 0, op, ": n_rays must be >= 0, got ", n_rays);
}

}  // namespace

std::tuple<Tensor, Tensor> render_weights_fwd(const Tensor& sigmas, const Tensor& t_starts, const Tensor& t_ends,
                                              const Tensor& ray_indices, int64_t n_rays, double t_thresh) {
  check_packed("render_weights", sigmas, t_starts, t_ends, ray_indices, n_rays);
  R3D_DISPATCH(sigmas.device(), render_weights_fwd, sigmas, t_starts, t_ends, ray_indices, n_rays, t_thresh);
}

Tensor render_weights_bwd(const Tensor& grad_weights, const OptTensor& grad_trans, const Tensor& sigmas,
                          const Tensor& t_starts, const Tensor& t_ends, const Tensor& ray_indices, int64_t n_rays,
                          const Tensor& weights, const Tensor& trans, double t_thresh) {
  const char* op = "render_weights_bwd";
  check_packed(op, sigmas, t_starts, t_ends, ray_indices, n_rays);
  const auto dev = sigmas.device();
  const int64_t s = sigmas.size(0);
  for (const auto& [t, name] : {std::pair<const Tensor&, const char*>{grad_weights, "grad_weights"},
                                {weights, "weights"},
                                {trans, "trans"}}) {
    check_input(t, op, name, at::kFloat, dev);
    check_shape(t, op, name, {s});
  }
  if (grad_trans.has_value()) {
    check_input(*grad_trans, op, "grad_trans", at::kFloat, dev);
    check_shape(*grad_trans, op, "grad_trans", {s});
  }
  R3D_DISPATCH(dev, render_weights_bwd, grad_weights, grad_trans, sigmas, t_starts, t_ends, ray_indices, n_rays,
               weights, trans, t_thresh);
}

Tensor accumulate_along_rays_fwd(const Tensor& weights, const OptTensor& values, const Tensor& ray_indices,
                                 int64_t n_rays) {
  const char* op = "accumulate_along_rays";
  const auto dev = weights.device();
  check_input(weights, op, "weights", at::kFloat, dev);
  check_input(ray_indices, op, "ray_indices", at::kLong, dev);
  TORCH_CHECK(weights.dim() == 1, op, ": 'weights' must be 1-D, got shape ", weights.sizes());
  const int64_t s = weights.size(0);
  check_shape(ray_indices, op, "ray_indices", {s});
  if (values.has_value()) {
    check_input(*values, op, "values", at::kFloat, dev);
    TORCH_CHECK(values->dim() == 2 && values->size(0) == s, op, ": 'values' must have shape (", s,
                ", c), got ", values->sizes());
  }
  TORCH_CHECK(n_rays >= 0, op, ": n_rays must be >= 0, got ", n_rays);
  R3D_DISPATCH(dev, accumulate_along_rays_fwd, weights, values, ray_indices, n_rays);
}

std::tuple<Tensor, OptTensor> accumulate_along_rays_bwd(const Tensor& grad_out, const Tensor& weights,
                                                        const OptTensor& values, const Tensor& ray_indices,
                                                        int64_t n_rays) {
  const char* op = "accumulate_along_rays_bwd";
  const auto dev = weights.device();
  check_input(grad_out, op, "grad_out", at::kFloat, dev);
  check_input(weights, op, "weights", at::kFloat, dev);
  check_input(ray_indices, op, "ray_indices", at::kLong, dev);
  const int64_t s = weights.size(0);
  check_shape(ray_indices, op, "ray_indices", {s});
  const int64_t c = values.has_value() ? values->size(1) : 1;
  if (values.has_value()) {
    check_input(*values, op, "values", at::kFloat, dev);
    check_shape(*values, op, "values", {s, c});
  }
  check_shape(grad_out, op, "grad_out", {n_rays, c});
  R3D_DISPATCH(dev, accumulate_along_rays_bwd, grad_out, weights, values, ray_indices, n_rays);
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> composite_rays_train_fwd(const Tensor& sigmas, const Tensor& rgbs,
                                                                            const Tensor& t_starts,
                                                                            const Tensor& t_ends,
                                                                            const Tensor& ray_indices, int64_t n_rays,
                                                                            double t_thresh) {
  const char* op = "composite_rays_train";
  check_packed(op, sigmas, t_starts, t_ends, ray_indices, n_rays);
  check_input(rgbs, op, "rgbs", at::kFloat, sigmas.device());
  check_shape(rgbs, op, "rgbs", {sigmas.size(0), 3});
  R3D_DISPATCH(sigmas.device(), composite_rays_train_fwd, sigmas, rgbs, t_starts, t_ends, ray_indices, n_rays,
               t_thresh);
}

std::tuple<Tensor, Tensor> composite_rays_train_bwd(const Tensor& grad_weights, const Tensor& grad_image,
                                                    const Tensor& grad_depth, const Tensor& grad_acc,
                                                    const Tensor& sigmas, const Tensor& rgbs, const Tensor& t_starts,
                                                    const Tensor& t_ends, const Tensor& ray_indices, int64_t n_rays,
                                                    const Tensor& weights, const Tensor& trans, double t_thresh) {
  const char* op = "composite_rays_train_bwd";
  check_packed(op, sigmas, t_starts, t_ends, ray_indices, n_rays);
  const auto dev = sigmas.device();
  const int64_t s = sigmas.size(0);
  check_input(rgbs, op, "rgbs", at::kFloat, dev);
  check_shape(rgbs, op, "rgbs", {s, 3});
  for (const auto& [t, name] : {std::pair<const Tensor&, const char*>{grad_weights, "grad_weights"},
                                {weights, "weights"},
                                {trans, "trans"}}) {
    check_input(t, op, name, at::kFloat, dev);
    check_shape(t, op, name, {s});
  }
  check_input(grad_image, op, "grad_image", at::kFloat, dev);
  check_shape(grad_image, op, "grad_image", {n_rays, 3});
  check_input(grad_depth, op, "grad_depth", at::kFloat, dev);
  check_shape(grad_depth, op, "grad_depth", {n_rays});
  check_input(grad_acc, op, "grad_acc", at::kFloat, dev);
  check_shape(grad_acc, op, "grad_acc", {n_rays});
  R3D_DISPATCH(dev, composite_rays_train_bwd, grad_weights, grad_image, grad_depth, grad_acc, sigmas, rgbs, t_starts,
               t_ends, ray_indices, n_rays, weights, trans, t_thresh);
}

Tensor composite_rays_inference_fwd(const Tensor& sigmas, const Tensor& rgbs, const Tensor& t_starts,
                                    const Tensor& t_ends, const Tensor& alive, const Tensor& t, const Tensor& t_far,
                                    const Tensor& image, const Tensor& depth, const Tensor& acc, const Tensor& trans,
                                    double t_thresh) {
  const char* op = "composite_rays_inference";
  const auto dev = sigmas.device();
  check_input(sigmas, op, "sigmas", at::kFloat, dev);
  check_input(rgbs, op, "rgbs", at::kFloat, dev);
  check_input(t_starts, op, "t_starts", at::kFloat, dev);
  check_input(t_ends, op, "t_ends", at::kFloat, dev);
  check_input(alive, op, "alive", at::kLong, dev);
  TORCH_CHECK(sigmas.dim() == 2, op, ": 'sigmas' must have shape (n_alive, n_steps), got ", sigmas.sizes());
  const int64_t a = sigmas.size(0), k = sigmas.size(1);
  check_shape(rgbs, op, "rgbs", {a, k, 3});
  check_shape(t_starts, op, "t_starts", {a, k});
  check_shape(t_ends, op, "t_ends", {a, k});
  check_shape(alive, op, "alive", {a});
  const int64_t n = t.numel();
  for (const auto& [x, name] : {std::pair<const Tensor&, const char*>{t, "t"},
                                {t_far, "t_far"},
                                {depth, "depth"},
                                {acc, "acc"},
                                {trans, "trans"}}) {
    check_input(x, op, name, at::kFloat, dev);
    check_shape(x, op, name, {n});
  }
  check_input(image, op, "image", at::kFloat, dev);
  check_shape(image, op, "image", {n, 3});
  R3D_DISPATCH(dev, composite_rays_inference_fwd, sigmas, rgbs, t_starts, t_ends, alive, t, t_far, image, depth, acc,
               trans, t_thresh);
}

}  // namespace relight3d
