// Volume rendering of packed samples (weights, accumulation, fused compositing) and front-to-back compositing for
// inference: checks, then the functors of kernels.h per ray (runs of packed samples), per sample or per row.
//
// Packed samples must be sorted by ray (all samples of a ray contiguous, front to back), as march_rays_train makes
// them; the CPU loops check this, the CUDA ones assume it.
#include "kernels.h"
#include "ops.h"
#include "parallel.h"

namespace relight3d {

namespace {

// sigmas, t_starts, t_ends float32 [s], ray_indices int64 [s], n_rays >= 0
Samples packed_samples(const char* op, const Tensor& sigmas, const Tensor& t_starts, const Tensor& t_ends,
                       const Tensor& ray_indices, int64_t n_rays, double t_thresh) {
  const auto dev = sigmas.device();
  R3D_CHECK(op, dev, at::kFloat, (sigmas, t_starts, t_ends), -1);
  R3D_CHECK(op, dev, at::kLong, (ray_indices), sigmas.size(0));
  TORCH_CHECK(n_rays >= 0, op, ": n_rays must be >= 0, got ", n_rays);
  return {cptr<float>(sigmas), cptr<float>(t_starts), cptr<float>(t_ends), static_cast<float>(t_thresh)};
}

// weights float32 [s], ray_indices int64 [s], values float32 [s, c] or none, n_rays >= 0; returns c (1 without values)
int64_t check_accumulate(const char* op, const Tensor& weights, const OptTensor& values, const Tensor& ray_indices,
                         int64_t n_rays) {
  const auto dev = weights.device();
  R3D_CHECK(op, dev, at::kFloat, (weights), -1);
  R3D_CHECK(op, dev, at::kLong, (ray_indices), weights.size(0));
  R3D_CHECK(op, dev, at::kFloat, (values), weights.size(0), -1);
  TORCH_CHECK(n_rays >= 0, op, ": n_rays must be >= 0, got ", n_rays);
  return values.has_value() ? values->size(1) : 1;
}

}  // namespace

std::tuple<Tensor, Tensor> render_weights_fwd(const Tensor& sigmas, const Tensor& t_starts, const Tensor& t_ends,
                                              const Tensor& ray_indices, int64_t n_rays, double t_thresh) {
  const char* op = "render_weights";
  const Samples s = packed_samples(op, sigmas, t_starts, t_ends, ray_indices, n_rays, t_thresh);
  const at::DeviceGuard guard(sigmas.device());
  Tensor weights = at::zeros_like(sigmas);
  Tensor trans = at::ones_like(sigmas);
  for_each_segment(ray_indices, n_rays, op, RenderWeights{s, ptr<float>(weights), ptr<float>(trans)});
  return {weights, trans};
}

Tensor render_weights_bwd(const Tensor& grad_weights, const OptTensor& grad_trans, const Tensor& sigmas,
                          const Tensor& t_starts, const Tensor& t_ends, const Tensor& ray_indices, int64_t n_rays,
                          const Tensor& weights, const Tensor& trans, double t_thresh) {
  const char* op = "render_weights_bwd";
  const Samples s = packed_samples(op, sigmas, t_starts, t_ends, ray_indices, n_rays, t_thresh);
  R3D_CHECK(op, sigmas.device(), at::kFloat, (grad_weights, grad_trans, weights, trans), sigmas.size(0));
  const at::DeviceGuard guard(sigmas.device());
  Tensor grad_sigmas = at::zeros_like(sigmas);
  for_each_segment(ray_indices, n_rays, op,
                   RenderWeightsBackward{s, cptr<float>(weights), cptr<float>(trans), cptr<float>(grad_weights),
                                         cptr<float>(grad_trans), ptr<float>(grad_sigmas)});
  return grad_sigmas;
}

Tensor accumulate_along_rays_fwd(const Tensor& weights, const OptTensor& values, const Tensor& ray_indices,
                                 int64_t n_rays) {
  const int64_t c = check_accumulate("accumulate_along_rays", weights, values, ray_indices, n_rays);
  const auto dev = weights.device();
  const at::DeviceGuard guard(dev);
  Tensor out = at::zeros({n_rays, c}, weights.options());
  // one CPU thread: a sequential scatter is memory bound, and it accepts samples in any order (like index_add)
  for_each(dev, weights.size(0), kSerial,
           Accumulate{cptr<float>(weights), cptr<float>(values), cptr<int64_t>(ray_indices), n_rays, c,
                      ptr<float>(out)});
  return out;
}

std::tuple<Tensor, OptTensor> accumulate_along_rays_bwd(const Tensor& grad_out, const Tensor& weights,
                                                        const OptTensor& values, const Tensor& ray_indices,
                                                        int64_t n_rays) {
  const char* op = "accumulate_along_rays_bwd";
  const int64_t c = check_accumulate(op, weights, values, ray_indices, n_rays);
  const auto dev = weights.device();
  R3D_CHECK(op, dev, at::kFloat, (grad_out), n_rays, c);
  const at::DeviceGuard guard(dev);
  Tensor grad_weights = at::empty_like(weights);
  OptTensor grad_values;
  if (values.has_value()) grad_values = at::empty_like(*values);
  for_each(dev, weights.size(0), kGrainElementwise / 4,
           AccumulateBackward{cptr<float>(weights), cptr<float>(values), cptr<float>(grad_out),
                              cptr<int64_t>(ray_indices), n_rays, c, ptr<float>(grad_weights),
                              grad_values.has_value() ? ptr<float>(*grad_values) : nullptr});
  return {grad_weights, grad_values};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> composite_rays_train_fwd(const Tensor& sigmas, const Tensor& rgbs,
                                                                            const Tensor& t_starts,
                                                                            const Tensor& t_ends,
                                                                            const Tensor& ray_indices, int64_t n_rays,
                                                                            double t_thresh) {
  const char* op = "composite_rays_train";
  const Samples s = packed_samples(op, sigmas, t_starts, t_ends, ray_indices, n_rays, t_thresh);
  R3D_CHECK(op, sigmas.device(), at::kFloat, (rgbs), sigmas.size(0), 3);
  const at::DeviceGuard guard(sigmas.device());
  Tensor weights = at::zeros_like(sigmas);
  Tensor trans = at::ones_like(sigmas);
  Tensor image = at::zeros({n_rays, 3}, sigmas.options());
  Tensor depth = at::zeros({n_rays}, sigmas.options());
  Tensor acc = at::zeros({n_rays}, sigmas.options());
  for_each_segment(ray_indices, n_rays, op,
                   Composite{s, cptr<float>(rgbs), ptr<float>(weights), ptr<float>(trans), ptr<float>(image),
                             ptr<float>(depth), ptr<float>(acc)});
  return {weights, image, depth, acc, trans};
}

std::tuple<Tensor, Tensor> composite_rays_train_bwd(const Tensor& grad_weights, const Tensor& grad_image,
                                                    const Tensor& grad_depth, const Tensor& grad_acc,
                                                    const Tensor& sigmas, const Tensor& rgbs, const Tensor& t_starts,
                                                    const Tensor& t_ends, const Tensor& ray_indices, int64_t n_rays,
                                                    const Tensor& weights, const Tensor& trans, double t_thresh) {
  const char* op = "composite_rays_train_bwd";
  const auto dev = sigmas.device();
  const Samples s = packed_samples(op, sigmas, t_starts, t_ends, ray_indices, n_rays, t_thresh);
  R3D_CHECK(op, dev, at::kFloat, (grad_weights, weights, trans), sigmas.size(0));
  R3D_CHECK(op, dev, at::kFloat, (rgbs), sigmas.size(0), 3);
  R3D_CHECK(op, dev, at::kFloat, (grad_image), n_rays, 3);
  R3D_CHECK(op, dev, at::kFloat, (grad_depth, grad_acc), n_rays);
  const at::DeviceGuard guard(dev);
  Tensor grad_sigmas = at::zeros_like(sigmas);
  Tensor grad_rgbs = at::zeros_like(rgbs);
  for_each_segment(ray_indices, n_rays, op,
                   CompositeBackward{s, cptr<float>(rgbs), cptr<float>(weights), cptr<float>(trans),
                                     cptr<float>(grad_weights), cptr<float>(grad_image), cptr<float>(grad_depth),
                                     cptr<float>(grad_acc), ptr<float>(grad_sigmas), ptr<float>(grad_rgbs)});
  return {grad_sigmas, grad_rgbs};
}

Tensor composite_rays_inference_fwd(const Tensor& sigmas, const Tensor& rgbs, const Tensor& t_starts,
                                    const Tensor& t_ends, const Tensor& alive, const Tensor& t, const Tensor& t_far,
                                    const Tensor& image, const Tensor& depth, const Tensor& acc, const Tensor& trans,
                                    double t_thresh) {
  const char* op = "composite_rays_inference";
  const auto dev = sigmas.device();
  R3D_CHECK(op, dev, at::kFloat, (sigmas, t_starts, t_ends), -1, -1);
  const int64_t a = sigmas.size(0), k = sigmas.size(1), n = t.numel();
  R3D_CHECK(op, dev, at::kFloat, (rgbs), a, k, 3);
  R3D_CHECK(op, dev, at::kLong, (alive), a);
  R3D_CHECK(op, dev, at::kFloat, (t, t_far, depth, acc, trans), n);
  R3D_CHECK(op, dev, at::kFloat, (image), n, 3);
  const at::DeviceGuard guard(dev);
  Tensor still = at::empty({a}, alive.options().dtype(at::kBool));
  for_each(dev, a, kGrainRays,
           CompositeInference{cptr<float>(sigmas), cptr<float>(rgbs), cptr<float>(t_starts), cptr<float>(t_ends),
                              cptr<int64_t>(alive), n, k, cptr<float>(t), cptr<float>(t_far), ptr<float>(image),
                              ptr<float>(depth), ptr<float>(acc), ptr<float>(trans), static_cast<float>(t_thresh),
                              ptr<bool>(still)});
  return alive.masked_select(still);
}

}  // namespace relight3d
