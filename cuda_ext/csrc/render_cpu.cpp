// Volume rendering: CPU kernels. Packed-sample ops run in parallel over rays (runs of equal ray indices).
#include "common.h"
#include "cpu_utils.h"
#include "ops.h"

#include <vector>

namespace relight3d {
namespace cpu {

std::tuple<Tensor, Tensor> render_weights_fwd(const Tensor& sigmas, const Tensor& t_starts, const Tensor& t_ends,
                                              const Tensor& ray_indices, int64_t n_rays, double t_thresh) {
  const int64_t s = sigmas.size(0);
  Tensor weights = at::empty_like(sigmas);
  Tensor trans = at::empty_like(sigmas);
  const float* sig = sigmas.data_ptr<float>();
  const float* ts = t_starts.data_ptr<float>();
  const float* te = t_ends.data_ptr<float>();
  float* w = weights.data_ptr<float>();
  float* T = trans.data_ptr<float>();
  const float thr = static_cast<float>(t_thresh);
  parallel_ray_segments(ray_indices.data_ptr<int64_t>(), s, n_rays, "render_weights",
                        [&](int64_t, int64_t b, int64_t e) { render_weights_segment(b, e, sig, ts, te, thr, w, T); });
  return {weights, trans};
}

Tensor render_weights_bwd(const Tensor& grad_weights, const OptTensor& grad_trans, const Tensor& sigmas,
                          const Tensor& t_starts, const Tensor& t_ends, const Tensor& ray_indices, int64_t n_rays,
                          const Tensor& weights, const Tensor& trans, double t_thresh) {
  const int64_t s = sigmas.size(0);
  Tensor grad_sigmas = at::empty_like(sigmas);
  const float* gw = grad_weights.data_ptr<float>();
  const float* gT = grad_trans.has_value() ? grad_trans->data_ptr<float>() : nullptr;
  const float* sig = sigmas.data_ptr<float>();
  const float* ts = t_starts.data_ptr<float>();
  const float* te = t_ends.data_ptr<float>();
  const float* w = weights.data_ptr<float>();
  const float* T = trans.data_ptr<float>();
  float* gs = grad_sigmas.data_ptr<float>();
  const float thr = static_cast<float>(t_thresh);
  parallel_ray_segments(ray_indices.data_ptr<int64_t>(), s, n_rays, "render_weights_bwd",
                        [&](int64_t, int64_t b, int64_t e) {
                          render_weights_segment_bwd(b, e, gw, gT, sig, ts, te, w, T, thr, gs);
                        });
  return grad_sigmas;
}

Tensor accumulate_along_rays_fwd(const Tensor& weights, const OptTensor& values, const Tensor& ray_indices,
                                 int64_t n_rays) {
  const int64_t s = weights.size(0);
  const int64_t c = values.has_value() ? values->size(1) : 1;
  Tensor out = at::zeros({n_rays, c}, weights.options());
  const float* w = weights.data_ptr<float>();
  const float* v = values.has_value() ? values->data_ptr<float>() : nullptr;
  const int64_t* ray = ray_indices.data_ptr<int64_t>();
  float* o = out.data_ptr<float>();
  // A sequential scatter: memory bound, and it accepts samples in any order (like index_add).
  for (int64_t i = 0; i < s; ++i) {
    const int64_t r = ray[i];
    TORCH_CHECK(r >= 0 && r < n_rays, "accumulate_along_rays: ray index ", r, " out of range [0, ", n_rays, ")");
    if (v == nullptr) {
      o[r] += w[i];
    } else {
      for (int64_t ch = 0; ch < c; ++ch) o[r * c + ch] += w[i] * v[i * c + ch];
    }
  }
  return out;
}

std::tuple<Tensor, OptTensor> accumulate_along_rays_bwd(const Tensor& grad_out, const Tensor& weights,
                                                        const OptTensor& values, const Tensor& ray_indices,
                                                        int64_t n_rays) {
  const int64_t s = weights.size(0);
  const int64_t c = grad_out.size(1);
  Tensor grad_weights = at::empty_like(weights);
  OptTensor grad_values;
  if (values.has_value()) grad_values = at::empty_like(*values);
  const float* g = grad_out.data_ptr<float>();
  const float* w = weights.data_ptr<float>();
  const float* v = values.has_value() ? values->data_ptr<float>() : nullptr;
  const int64_t* ray = ray_indices.data_ptr<int64_t>();
  float* gw = grad_weights.data_ptr<float>();
  float* gv = values.has_value() ? grad_values->data_ptr<float>() : nullptr;
  at::parallel_for(0, s, kGrainElementwise / 4, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t r = ray[i];
      TORCH_CHECK(r >= 0 && r < n_rays, "accumulate_along_rays: ray index ", r, " out of range [0, ", n_rays, ")");
      if (v == nullptr) {
        gw[i] = g[r];
        continue;
      }
      float acc = 0.0f;
      for (int64_t ch = 0; ch < c; ++ch) {
        acc += g[r * c + ch] * v[i * c + ch];
        gv[i * c + ch] = g[r * c + ch] * w[i];
      }
      gw[i] = acc;
    }
  });
  return {grad_weights, grad_values};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> composite_rays_train_fwd(const Tensor& sigmas, const Tensor& rgbs,
                                                                            const Tensor& t_starts,
                                                                            const Tensor& t_ends,
                                                                            const Tensor& ray_indices, int64_t n_rays,
                                                                            double t_thresh) {
  const int64_t s = sigmas.size(0);
  Tensor weights = at::empty_like(sigmas);
  Tensor trans = at::empty_like(sigmas);
  Tensor image = at::zeros({n_rays, 3}, sigmas.options());
  Tensor depth = at::zeros({n_rays}, sigmas.options());
  Tensor acc = at::zeros({n_rays}, sigmas.options());
  const float* sig = sigmas.data_ptr<float>();
  const float* rgb = rgbs.data_ptr<float>();
  const float* ts = t_starts.data_ptr<float>();
  const float* te = t_ends.data_ptr<float>();
  float* w = weights.data_ptr<float>();
  float* T = trans.data_ptr<float>();
  float* img = image.data_ptr<float>();
  float* dep = depth.data_ptr<float>();
  float* ac = acc.data_ptr<float>();
  const float thr = static_cast<float>(t_thresh);
  parallel_ray_segments(ray_indices.data_ptr<int64_t>(), s, n_rays, "composite_rays_train",
                        [&](int64_t r, int64_t b, int64_t e) {
                          composite_segment(b, e, sig, rgb, ts, te, thr, w, T, img + 3 * r, dep + r, ac + r);
                        });
  return {weights, image, depth, acc, trans};
}

std::tuple<Tensor, Tensor> composite_rays_train_bwd(const Tensor& grad_weights, const Tensor& grad_image,
                                                    const Tensor& grad_depth, const Tensor& grad_acc,
                                                    const Tensor& sigmas, const Tensor& rgbs, const Tensor& t_starts,
                                                    const Tensor& t_ends, const Tensor& ray_indices, int64_t n_rays,
                                                    const Tensor& weights, const Tensor& trans, double t_thresh) {
  const int64_t s = sigmas.size(0);
  Tensor grad_sigmas = at::empty_like(sigmas);
  Tensor grad_rgbs = at::empty_like(rgbs);
  const float* gw = grad_weights.data_ptr<float>();
  const float* gimg = grad_image.data_ptr<float>();
  const float* gdep = grad_depth.data_ptr<float>();
  const float* gacc = grad_acc.data_ptr<float>();
  const float* sig = sigmas.data_ptr<float>();
  const float* rgb = rgbs.data_ptr<float>();
  const float* ts = t_starts.data_ptr<float>();
  const float* te = t_ends.data_ptr<float>();
  const float* w = weights.data_ptr<float>();
  const float* T = trans.data_ptr<float>();
  float* gs = grad_sigmas.data_ptr<float>();
  float* grgb = grad_rgbs.data_ptr<float>();
  const float thr = static_cast<float>(t_thresh);
  parallel_ray_segments(ray_indices.data_ptr<int64_t>(), s, n_rays, "composite_rays_train_bwd",
                        [&](int64_t r, int64_t b, int64_t e) {
                          composite_segment_bwd(b, e, gw, gimg + 3 * r, gdep[r], gacc[r], sig, rgb, ts, te, w, T, thr,
                                                gs, grgb);
                        });
  return {grad_sigmas, grad_rgbs};
}

Tensor composite_rays_inference_fwd(const Tensor& sigmas, const Tensor& rgbs, const Tensor& t_starts,
                                    const Tensor& t_ends, const Tensor& alive, const Tensor& t, const Tensor& t_far,
                                    const Tensor& image, const Tensor& depth, const Tensor& acc, const Tensor& trans,
                                    double t_thresh) {
  const int64_t a = sigmas.size(0), k = sigmas.size(1), n = t.numel();
  const float* sig = sigmas.data_ptr<float>();
  const float* rgb = rgbs.data_ptr<float>();
  const float* ts = t_starts.data_ptr<float>();
  const float* te = t_ends.data_ptr<float>();
  const int64_t* al = alive.data_ptr<int64_t>();
  const float* tc = t.data_ptr<float>();
  const float* tf = t_far.data_ptr<float>();
  float* img = image.data_ptr<float>();
  float* dep = depth.data_ptr<float>();
  float* ac = acc.data_ptr<float>();
  float* T = trans.data_ptr<float>();
  const float thr = static_cast<float>(t_thresh);
  std::vector<uint8_t> still(a);
  at::parallel_for(0, a, kGrainRays, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t r = al[i];
      TORCH_CHECK(r >= 0 && r < n, "composite_rays_inference: alive ray ", r, " out of range [0, ", n, ")");
      T[r] = composite_inference_row(k, sig + i * k, rgb + 3 * i * k, ts + i * k, te + i * k, thr, T[r], img + 3 * r,
                                     dep + r, ac + r);
      still[i] = T[r] >= thr && tc[r] < tf[r];
    }
  });
  int64_t count = 0;
  for (int64_t i = 0; i < a; ++i) count += still[i];
  Tensor out = at::empty({count}, alive.options());
  int64_t* o = out.data_ptr<int64_t>();
  for (int64_t i = 0, j = 0; i < a; ++i) {
    if (still[i]) o[j++] = al[i];
  }
  return out;
}

}  // namespace cpu
}  // namespace relight3d
