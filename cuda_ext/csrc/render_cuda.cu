// Volume rendering: CUDA kernels. Packed-sample ops run one thread per ray over its run of samples, whose bounds
// come from a first pass over the (sorted) ray indices; accumulate_along_rays scatters with atomics instead, so it
// also accepts unsorted samples.
#include "common.h"
#include "cuda_utils.cuh"
#include "ops.h"

namespace relight3d {
namespace cuda {

namespace {

// [begin, end) of each ray's run of samples (0, 0 for rays without samples)
__global__ void segment_bounds_kernel(int64_t s, const int64_t* __restrict__ ray, int64_t n_rays,
                                      int64_t* __restrict__ begin, int64_t* __restrict__ end) {
  const int64_t i = thread_index(s);
  if (i < 0) return;
  const int64_t r = ray[i];
  if (r < 0 || r >= n_rays) return;
  if (i == 0 || ray[i - 1] != r) begin[r] = i;
  if (i == s - 1 || ray[i + 1] != r) end[r] = i + 1;
}

std::tuple<Tensor, Tensor> segment_bounds(const Tensor& ray_indices, int64_t n_rays) {
  Tensor begin = at::zeros({n_rays}, ray_indices.options());
  Tensor end = at::zeros({n_rays}, ray_indices.options());
  R3D_LAUNCH(segment_bounds_kernel, ray_indices.size(0), ray_indices.data_ptr<int64_t>(), n_rays,
             begin.data_ptr<int64_t>(), end.data_ptr<int64_t>());
  return {begin, end};
}

__global__ void render_weights_fwd_kernel(int64_t n_rays, const int64_t* __restrict__ begin,
                                          const int64_t* __restrict__ end, const float* __restrict__ sigmas,
                                          const float* __restrict__ t_starts, const float* __restrict__ t_ends,
                                          float t_thresh, float* __restrict__ weights, float* __restrict__ trans) {
  const int64_t r = thread_index(n_rays);
  if (r < 0) return;
  render_weights_segment(begin[r], end[r], sigmas, t_starts, t_ends, t_thresh, weights, trans);
}

__global__ void render_weights_bwd_kernel(int64_t n_rays, const int64_t* __restrict__ begin,
                                          const int64_t* __restrict__ end, const float* __restrict__ grad_w,
                                          const float* __restrict__ grad_trans, const float* __restrict__ sigmas,
                                          const float* __restrict__ t_starts, const float* __restrict__ t_ends,
                                          const float* __restrict__ weights, const float* __restrict__ trans,
                                          float t_thresh, float* __restrict__ grad_sigmas) {
  const int64_t r = thread_index(n_rays);
  if (r < 0) return;
  render_weights_segment_bwd(begin[r], end[r], grad_w, grad_trans, sigmas, t_starts, t_ends, weights, trans, t_thresh,
                             grad_sigmas);
}

__global__ void accumulate_fwd_kernel(int64_t s, const float* __restrict__ weights, const float* __restrict__ values,
                                      const int64_t* __restrict__ ray, int64_t n_rays, int64_t c,
                                      float* __restrict__ out) {
  const int64_t i = thread_index(s);
  if (i < 0) return;
  const int64_t r = ray[i];
  if (r < 0 || r >= n_rays) return;
  if (values == nullptr) {
    atomicAdd(out + r, weights[i]);
  } else {
    for (int64_t ch = 0; ch < c; ++ch) atomicAdd(out + r * c + ch, weights[i] * values[i * c + ch]);
  }
}

__global__ void accumulate_bwd_kernel(int64_t s, const float* __restrict__ grad_out, const float* __restrict__ weights,
                                      const float* __restrict__ values, const int64_t* __restrict__ ray,
                                      int64_t n_rays, int64_t c, float* __restrict__ grad_w,
                                      float* __restrict__ grad_v) {
  const int64_t i = thread_index(s);
  if (i < 0) return;
  const int64_t r = ray[i];
  if (r < 0 || r >= n_rays) {
    grad_w[i] = 0.0f;
    if (values != nullptr) {
      for (int64_t ch = 0; ch < c; ++ch) grad_v[i * c + ch] = 0.0f;
    }
    return;
  }
  if (values == nullptr) {
    grad_w[i] = grad_out[r];
    return;
  }
  float acc = 0.0f;
  for (int64_t ch = 0; ch < c; ++ch) {
    acc += grad_out[r * c + ch] * values[i * c + ch];
    grad_v[i * c + ch] = grad_out[r * c + ch] * weights[i];
  }
  grad_w[i] = acc;
}

__global__ void composite_fwd_kernel(int64_t n_rays, const int64_t* __restrict__ begin,
                                     const int64_t* __restrict__ end, const float* __restrict__ sigmas,
                                     const float* __restrict__ rgbs, const float* __restrict__ t_starts,
                                     const float* __restrict__ t_ends, float t_thresh, float* __restrict__ weights,
                                     float* __restrict__ trans, float* __restrict__ image, float* __restrict__ depth,
                                     float* __restrict__ acc) {
  const int64_t r = thread_index(n_rays);
  if (r < 0) return;
  composite_segment(begin[r], end[r], sigmas, rgbs, t_starts, t_ends, t_thresh, weights, trans, image + 3 * r,
                    depth + r, acc + r);
}

__global__ void composite_bwd_kernel(int64_t n_rays, const int64_t* __restrict__ begin,
                                     const int64_t* __restrict__ end, const float* __restrict__ grad_w,
                                     const float* __restrict__ grad_image, const float* __restrict__ grad_depth,
                                     const float* __restrict__ grad_acc, const float* __restrict__ sigmas,
                                     const float* __restrict__ rgbs, const float* __restrict__ t_starts,
                                     const float* __restrict__ t_ends, const float* __restrict__ weights,
                                     const float* __restrict__ trans, float t_thresh,
                                     float* __restrict__ grad_sigmas, float* __restrict__ grad_rgbs) {
  const int64_t r = thread_index(n_rays);
  if (r < 0) return;
  composite_segment_bwd(begin[r], end[r], grad_w, grad_image + 3 * r, grad_depth[r], grad_acc[r], sigmas, rgbs,
                        t_starts, t_ends, weights, trans, t_thresh, grad_sigmas, grad_rgbs);
}

__global__ void composite_inference_kernel(int64_t a, int64_t k, const float* __restrict__ sigmas,
                                           const float* __restrict__ rgbs, const float* __restrict__ t_starts,
                                           const float* __restrict__ t_ends, const int64_t* __restrict__ alive,
                                           int64_t n_rays, const float* __restrict__ t,
                                           const float* __restrict__ t_far, float* __restrict__ image,
                                           float* __restrict__ depth, float* __restrict__ acc,
                                           float* __restrict__ trans, float t_thresh, bool* __restrict__ still) {
  const int64_t i = thread_index(a);
  if (i < 0) return;
  const int64_t r = alive[i];
  if (r < 0 || r >= n_rays) {
    still[i] = false;
    return;
  }
  const float T = composite_inference_row(k, sigmas + i * k, rgbs + 3 * i * k, t_starts + i * k, t_ends + i * k,
                                          t_thresh, trans[r], image + 3 * r, depth + r, acc + r);
  trans[r] = T;
  still[i] = T >= t_thresh && t[r] < t_far[r];
}

}  // namespace

std::tuple<Tensor, Tensor> render_weights_fwd(const Tensor& sigmas, const Tensor& t_starts, const Tensor& t_ends,
                                              const Tensor& ray_indices, int64_t n_rays, double t_thresh) {
  const c10::cuda::CUDAGuard guard(sigmas.device());
  Tensor weights = at::zeros_like(sigmas);
  Tensor trans = at::ones_like(sigmas);
  const auto [begin, end] = segment_bounds(ray_indices, n_rays);
  R3D_LAUNCH(render_weights_fwd_kernel, n_rays, begin.data_ptr<int64_t>(), end.data_ptr<int64_t>(),
             sigmas.data_ptr<float>(), t_starts.data_ptr<float>(), t_ends.data_ptr<float>(),
             static_cast<float>(t_thresh), weights.data_ptr<float>(), trans.data_ptr<float>());
  return {weights, trans};
}

Tensor render_weights_bwd(const Tensor& grad_weights, const OptTensor& grad_trans, const Tensor& sigmas,
                          const Tensor& t_starts, const Tensor& t_ends, const Tensor& ray_indices, int64_t n_rays,
                          const Tensor& weights, const Tensor& trans, double t_thresh) {
  const c10::cuda::CUDAGuard guard(sigmas.device());
  Tensor grad_sigmas = at::zeros_like(sigmas);
  const auto [begin, end] = segment_bounds(ray_indices, n_rays);
  R3D_LAUNCH(render_weights_bwd_kernel, n_rays, begin.data_ptr<int64_t>(), end.data_ptr<int64_t>(),
             grad_weights.data_ptr<float>(), grad_trans.has_value() ? grad_trans->data_ptr<float>() : nullptr,
             sigmas.data_ptr<float>(), t_starts.data_ptr<float>(), t_ends.data_ptr<float>(),
             weights.data_ptr<float>(), trans.data_ptr<float>(), static_cast<float>(t_thresh),
             grad_sigmas.data_ptr<float>());
  return grad_sigmas;
}

Tensor accumulate_along_rays_fwd(const Tensor& weights, const OptTensor& values, const Tensor& ray_indices,
                                 int64_t n_rays) {
  const c10::cuda::CUDAGuard guard(weights.device());
  const int64_t c = values.has_value() ? values->size(1) : 1;
  Tensor out = at::zeros({n_rays, c}, weights.options());
  R3D_LAUNCH(accumulate_fwd_kernel, weights.size(0), weights.data_ptr<float>(),
             values.has_value() ? values->data_ptr<float>() : nullptr, ray_indices.data_ptr<int64_t>(), n_rays, c,
             out.data_ptr<float>());
  return out;
}

std::tuple<Tensor, OptTensor> accumulate_along_rays_bwd(const Tensor& grad_out, const Tensor& weights,
                                                        const OptTensor& values, const Tensor& ray_indices,
                                                        int64_t n_rays) {
  const c10::cuda::CUDAGuard guard(weights.device());
  const int64_t c = grad_out.size(1);
  Tensor grad_weights = at::empty_like(weights);
  OptTensor grad_values;
  if (values.has_value()) grad_values = at::empty_like(*values);
  R3D_LAUNCH(accumulate_bwd_kernel, weights.size(0), grad_out.data_ptr<float>(), weights.data_ptr<float>(),
             values.has_value() ? values->data_ptr<float>() : nullptr, ray_indices.data_ptr<int64_t>(), n_rays, c,
             grad_weights.data_ptr<float>(), values.has_value() ? grad_values->data_ptr<float>() : nullptr);
  return {grad_weights, grad_values};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> composite_rays_train_fwd(const Tensor& sigmas, const Tensor& rgbs,
                                                                            const Tensor& t_starts,
                                                                            const Tensor& t_ends,
                                                                            const Tensor& ray_indices, int64_t n_rays,
                                                                            double t_thresh) {
  const c10::cuda::CUDAGuard guard(sigmas.device());
  Tensor weights = at::zeros_like(sigmas);
  Tensor trans = at::ones_like(sigmas);
  Tensor image = at::zeros({n_rays, 3}, sigmas.options());
  Tensor depth = at::zeros({n_rays}, sigmas.options());
  Tensor acc = at::zeros({n_rays}, sigmas.options());
  const auto [begin, end] = segment_bounds(ray_indices, n_rays);
  R3D_LAUNCH(composite_fwd_kernel, n_rays, begin.data_ptr<int64_t>(), end.data_ptr<int64_t>(),
             sigmas.data_ptr<float>(), rgbs.data_ptr<float>(), t_starts.data_ptr<float>(), t_ends.data_ptr<float>(),
             static_cast<float>(t_thresh), weights.data_ptr<float>(), trans.data_ptr<float>(), image.data_ptr<float>(),
             depth.data_ptr<float>(), acc.data_ptr<float>());
  return {weights, image, depth, acc, trans};
}

std::tuple<Tensor, Tensor> composite_rays_train_bwd(const Tensor& grad_weights, const Tensor& grad_image,
                                                    const Tensor& grad_depth, const Tensor& grad_acc,
                                                    const Tensor& sigmas, const Tensor& rgbs, const Tensor& t_starts,
                                                    const Tensor& t_ends, const Tensor& ray_indices, int64_t n_rays,
                                                    const Tensor& weights, const Tensor& trans, double t_thresh) {
  const c10::cuda::CUDAGuard guard(sigmas.device());
  Tensor grad_sigmas = at::zeros_like(sigmas);
  Tensor grad_rgbs = at::zeros_like(rgbs);
  const auto [begin, end] = segment_bounds(ray_indices, n_rays);
  R3D_LAUNCH(composite_bwd_kernel, n_rays, begin.data_ptr<int64_t>(), end.data_ptr<int64_t>(),
             grad_weights.data_ptr<float>(), grad_image.data_ptr<float>(), grad_depth.data_ptr<float>(),
             grad_acc.data_ptr<float>(), sigmas.data_ptr<float>(), rgbs.data_ptr<float>(), t_starts.data_ptr<float>(),
             t_ends.data_ptr<float>(), weights.data_ptr<float>(), trans.data_ptr<float>(), static_cast<float>(t_thresh),
             grad_sigmas.data_ptr<float>(), grad_rgbs.data_ptr<float>());
  return {grad_sigmas, grad_rgbs};
}

Tensor composite_rays_inference_fwd(const Tensor& sigmas, const Tensor& rgbs, const Tensor& t_starts,
                                    const Tensor& t_ends, const Tensor& alive, const Tensor& t, const Tensor& t_far,
                                    const Tensor& image, const Tensor& depth, const Tensor& acc, const Tensor& trans,
                                    double t_thresh) {
  const c10::cuda::CUDAGuard guard(sigmas.device());
  const int64_t a = sigmas.size(0), k = sigmas.size(1);
  Tensor still = at::zeros({a}, alive.options().dtype(at::kBool));
  R3D_LAUNCH(composite_inference_kernel, a, k, sigmas.data_ptr<float>(), rgbs.data_ptr<float>(),
             t_starts.data_ptr<float>(), t_ends.data_ptr<float>(), alive.data_ptr<int64_t>(), t.numel(),
             t.data_ptr<float>(), t_far.data_ptr<float>(), image.data_ptr<float>(), depth.data_ptr<float>(),
             acc.data_ptr<float>(), trans.data_ptr<float>(), static_cast<float>(t_thresh), still.data_ptr<bool>());
  return alive.masked_select(still);
}

}  // namespace cuda
}  // namespace relight3d
