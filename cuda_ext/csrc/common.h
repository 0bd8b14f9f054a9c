// Per-element and per-ray logic shared by the C++ CPU kernels and the CUDA kernels.
//
// Everything here is plain arithmetic on raw pointers, marked R3D_HD so that nvcc compiles it for the device too.
// The CPU path (tested everywhere) and the CUDA path run exactly the same code; only the loops around it differ.
//
// The float operations mirror relight3d/ops/_torch_impl.py one for one (same operands, same order), so that the
// compiled kernels reproduce the reference up to the rounding of exp/log (whose last bit differs between libm,
// torch's vectorised versions and CUDA). Do not "simplify" a division into a multiplication by a reciprocal here:
// sample positions are compared against cell boundaries, so their rounding matters.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define R3D_HD __host__ __device__ __forceinline__
#else
#define R3D_HD inline
#endif

namespace relight3d {

constexpr float kMissT = 1e10f;  // t_near and t_far of rays that miss the box (MISS_T in _torch_impl)

// clamp that keeps NaN (like torch.clamp)
R3D_HD float clampf(float x, float lo, float hi) { return x < lo ? lo : (x > hi ? hi : x); }
R3D_HD float maxf(float a, float b) { return a < b ? b : a; }
R3D_HD float minf(float a, float b) { return b < a ? b : a; }
// max that propagates NaN from either side (like torch.maximum)
R3D_HD float maximum_nan(float a, float b) { return (a != a || b != b) ? (a != a ? a : b) : (a < b ? b : a); }

// ---------------------------------------------------------------------------------------------------------------
// Morton codes (x in the lowest bit, 10 bits per axis)
// ---------------------------------------------------------------------------------------------------------------
R3D_HD int64_t spread_bits(int64_t v) {
  v &= 0x3FF;
  v = (v | (v << 16)) & 0x030000FF;
  v = (v | (v << 8)) & 0x0300F00F;
  v = (v | (v << 4)) & 0x030C30C3;
  v = (v | (v << 2)) & 0x09249249;
  return v;
}

R3D_HD int64_t compact_bits(int64_t v) {
  v &= 0x09249249;
  v = (v | (v >> 2)) & 0x030C30C3;
  v = (v | (v >> 4)) & 0x0300F00F;
  v = (v | (v >> 8)) & 0x030000FF;
  v = (v | (v >> 16)) & 0x3FF;
  return v;
}

R3D_HD int64_t morton3d(int64_t x, int64_t y, int64_t z) {
  return spread_bits(x) | (spread_bits(y) << 1) | (spread_bits(z) << 2);
}

// ---------------------------------------------------------------------------------------------------------------
// Ray / box
// ---------------------------------------------------------------------------------------------------------------
// Slab test of one ray; writes t_near, t_far (MISS_T for both on a miss). Same operations as the reference.
R3D_HD void ray_aabb(const float* o, const float* d, const float* aabb, float near_min, float* t_near, float* t_far) {
  float tmin = -INFINITY, tmax = INFINITY;
  for (int a = 0; a < 3; ++a) {
    const float da = fabsf(d[a]) < 1e-15f ? 1e-15f : d[a];
    const float inv = 1.0f / da;
    const float t0 = (aabb[a] - o[a]) * inv;
    const float t1 = (aabb[a + 3] - o[a]) * inv;
    tmin = maxf(tmin, minf(t0, t1));
    tmax = minf(tmax, maxf(t0, t1));
  }
  tmin = maxf(tmin, near_min);
  if (tmax <= tmin) {
    tmin = kMissT;
    tmax = kMissT;
  }
  *t_near = tmin;
  *t_far = tmax;
}

// ---------------------------------------------------------------------------------------------------------------
// Cascaded occupancy grid
// ---------------------------------------------------------------------------------------------------------------
struct GridGeom {
  float center[3];
  float half[3];
  float half_res;    // 0.5 * res
  float max_extent;  // 2 ** (n_cascades - 1): the largest cascade spans [-max_extent, max_extent] in box units
  int n_cascades;
  int res;
  int64_t cells_per_cascade;
};

R3D_HD GridGeom make_grid_geom(const float* aabb, int n_cascades, int res) {
  GridGeom g;
  for (int a = 0; a < 3; ++a) {
    g.center[a] = (aabb[a] + aabb[a + 3]) * 0.5f;
    g.half[a] = (aabb[a + 3] - aabb[a]) * 0.5f;
  }
  g.half_res = 0.5f * static_cast<float>(res);
  g.max_extent = static_cast<float>(1LL << (n_cascades - 1));
  g.n_cascades = n_cascades;
  g.res = res;
  g.cells_per_cascade = static_cast<int64_t>(res) * res * res;
  return g;
}

// Smallest c >= 0 with extent <= 2**c, i.e. ceil(log2(extent)) clamped at 0, computed exactly.
R3D_HD int cascade_of(float extent) {
  if (!(extent > 1.0f && extent < INFINITY)) return 0;
  int e;
  const float m = frexpf(extent, &e);  // extent = m * 2**e, m in [0.5, 1)
  return m == 0.5f ? e - 1 : e;
}

// Cell coordinate along one axis: trunc((rel + 1) * res / 2) clamped to [0, res - 1] (NaN -> 0).
R3D_HD int64_t cell_coord(float rel, float half_res, int res) {
  const float v = (rel + 1.0f) * half_res;
  if (!(v >= 1.0f)) return 0;
  if (v >= static_cast<float>(res - 1)) return res - 1;
  return static_cast<int64_t>(v);
}

// Flat cell index (cascade * res**3 + morton) of a position, or -1 when it lies outside the largest cascade.
R3D_HD int64_t grid_cell(const GridGeom& g, float px, float py, float pz) {
  float rel[3] = {(px - g.center[0]) / g.half[0], (py - g.center[1]) / g.half[1], (pz - g.center[2]) / g.half[2]};
  const float extent = maxf(maxf(fabsf(rel[0]), fabsf(rel[1])), fabsf(rel[2]));
  if (!(extent <= g.max_extent)) return -1;
  int c = 0;
  if (g.n_cascades > 1) {
    c = cascade_of(extent);
    if (c > g.n_cascades - 1) c = g.n_cascades - 1;
    const float inv_scale = ldexpf(1.0f, -c);  // exact: rel * 2**-c == rel / 2**c
    for (int a = 0; a < 3; ++a) rel[a] = rel[a] * inv_scale;
  }
  const int64_t i = cell_coord(rel[0], g.half_res, g.res);
  const int64_t j = cell_coord(rel[1], g.half_res, g.res);
  const int64_t k = cell_coord(rel[2], g.half_res, g.res);
  return c * g.cells_per_cascade + morton3d(i, j, k);
}

R3D_HD bool bit_is_set(const uint8_t* bitfield, int64_t cell) { return (bitfield[cell >> 3] >> (cell & 7)) & 1; }

R3D_HD bool grid_occupied(const GridGeom& g, const uint8_t* bitfield, float px, float py, float pz) {
  const int64_t cell = grid_cell(g, px, py, pz);
  return cell >= 0 && bit_is_set(bitfield, cell);
}

// World position inside cell `index` (cascade * res**3 + morton); jitter in [0, 1)^3 (0.5 = centre).
R3D_HD void cell_position(const GridGeom& g, int64_t index, float jx, float jy, float jz, float* out) {
  int64_t cascade = index / g.cells_per_cascade;  // floor division and modulo, as torch's
  int64_t code = index % g.cells_per_cascade;
  if (code < 0) {
    code += g.cells_per_cascade;
    --cascade;
  }
  const float scale = ldexpf(1.0f, static_cast<int>(cascade < -200 ? -200 : (cascade > 200 ? 200 : cascade)));
  const float jit[3] = {jx, jy, jz};
  const float res = static_cast<float>(g.res);
  for (int a = 0; a < 3; ++a) {
    const float ijk = static_cast<float>(compact_bits(code >> a));
    const float frac = (ijk + jit[a]) / res;
    out[a] = g.center[a] + (frac * 2.0f - 1.0f) * g.half[a] * scale;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Step schedule (cone stepping), closed form of _torch_impl.step_schedule / _count_steps
// ---------------------------------------------------------------------------------------------------------------
struct StepParams {
  float dt_min, dt_max, gamma;  // gamma = dt_gamma
  float t_a, t_b, log_r;        // dt_min / dt_gamma, dt_max / dt_gamma, log1p(dt_gamma) (computed in double)
  bool cone;                    // dt_gamma > 0
};

inline StepParams make_step_params(double dt_min, double dt_max, double dt_gamma) {
  StepParams p;
  p.dt_min = static_cast<float>(dt_min);
  p.dt_max = static_cast<float>(dt_max);
  p.gamma = static_cast<float>(dt_gamma);
  p.cone = dt_gamma > 0.0;
  p.t_a = p.cone ? static_cast<float>(dt_min / dt_gamma) : 0.0f;
  p.t_b = p.cone ? static_cast<float>(dt_max / dt_gamma) : 0.0f;
  p.log_r = p.cone ? static_cast<float>(std::log1p(dt_gamma)) : 0.0f;
  return p;
}

// dt(t) = clamp(t * dt_gamma, dt_min, dt_max)
R3D_HD float step_size(const StepParams& p, float t) { return p.cone ? clampf(t * p.gamma, p.dt_min, p.dt_max) : p.dt_min; }

// Per-ray constants of the closed form: the step index and t at which phases B (geometric) and C (dt_max) begin.
struct RaySchedule {
  float t_start, k_a, t_at_a, k_b, t_at_b;
};

R3D_HD RaySchedule make_ray_schedule(const StepParams& p, float t_start) {
  RaySchedule s;
  s.t_start = t_start;
  if (!p.cone) {
    s.k_a = s.t_at_a = s.k_b = s.t_at_b = 0.0f;
    return s;
  }
  s.k_a = ceilf(maxf((p.t_a - t_start) / p.dt_min, 0.0f));
  s.t_at_a = t_start + s.k_a * p.dt_min;
  s.k_b = ceilf(maxf(logf(p.t_b / s.t_at_a) / p.log_r, 0.0f));
  s.t_at_b = s.t_at_a * expf(s.k_b * p.log_r);
  return s;
}

// t_k of the schedule
R3D_HD float schedule_t(const StepParams& p, const RaySchedule& s, float k) {
  if (!p.cone || k < s.k_a) return s.t_start + k * p.dt_min;
  if (k < s.k_a + s.k_b) return s.t_at_a * expf((k - s.k_a) * p.log_r);
  return s.t_at_b + (k - s.k_a - s.k_b) * p.dt_max;
}

// Number of steps k with t_k < t_far, capped at max_steps (closed form, as _count_steps).
R3D_HD int64_t count_steps(const StepParams& p, const RaySchedule& s, float t_far, int64_t max_steps) {
  const float span = maxf(t_far - s.t_start, 0.0f);
  float n;
  if (!p.cone) {
    n = ceilf(span / p.dt_min);
  } else if (t_far <= s.t_at_a) {
    n = ceilf(span / p.dt_min);
  } else if (t_far <= s.t_at_b) {
    n = s.k_a + ceilf(maxf(logf(t_far / s.t_at_a) / p.log_r, 0.0f));
  } else {
    n = s.k_a + s.k_b + ceilf(maxf((t_far - s.t_at_b) / p.dt_max, 0.0f));
  }
  if (!(t_far > s.t_start) || !(n > 0.0f)) return 0;  // also NaN
  const float cap = static_cast<float>(max_steps);
  return n >= cap ? max_steps : static_cast<int64_t>(n);
}

// First sample of a training ray: t_near + jitter * dt(t_near); rays with t_far <= t_near start at t_far.
R3D_HD float train_t_start(const StepParams& p, float t_near, float t_far, float jitter) {
  const float dt0 = step_size(p, t_near);
  const float t_start = t_near + jitter * dt0;
  return t_far > t_near ? t_start : t_far;
}

// One candidate sample [t0, t1] of a ray; returns whether the cell holding its midpoint is occupied.
R3D_HD bool candidate_occupied(const StepParams& p, const GridGeom& g, const uint8_t* bitfield, const float* o,
                               const float* d, float t0, float t_far, float* t1_out) {
  const float t1 = minf(t0 + step_size(p, t0), t_far);
  const float mid = (t0 + t1) * 0.5f;
  *t1_out = t1;
  return grid_occupied(g, bitfield, o[0] + d[0] * mid, o[1] + d[1] * mid, o[2] + d[2] * mid);
}

// March one training ray over its candidate steps k in [k_begin, k_end) (clipped to the ray's count).
// `emit(slot, k, t0, t1)` is called for each kept sample, slots numbered from 0; returns the number kept.
// The counting pass runs over all steps with an `emit` that only notes the first and last kept k; the filling pass
// then needs to walk only those steps (empty space before and after them keeps nothing).
template <typename Emit>
R3D_HD int64_t march_train_ray(const StepParams& p, const GridGeom& g, const uint8_t* bitfield, const float* o,
                               const float* d, float t_near, float t_far, float jitter, int64_t max_steps,
                               int64_t k_begin, int64_t k_end, Emit&& emit) {
  const RaySchedule s = make_ray_schedule(p, train_t_start(p, t_near, t_far, jitter));
  const int64_t n = count_steps(p, s, t_far, max_steps);
  if (k_end > n) k_end = n;
  int64_t kept = 0;
  for (int64_t k = k_begin; k < k_end; ++k) {
    const float t0 = schedule_t(p, s, static_cast<float>(k));
    if (!(t0 < t_far)) continue;
    float t1;
    if (candidate_occupied(p, g, bitfield, o, d, t0, t_far, &t1)) {
      emit(kept, k, t0, t1);
      ++kept;
    }
  }
  return kept;
}

// Emit for the counting pass: remembers the first and last kept step.
struct KeptRange {
  int64_t first = -1, last = -1;
  R3D_HD void operator()(int64_t, int64_t k, float, float) {
    if (first < 0) first = k;
    last = k;
  }
};

// March one inference ray from its current t: up to n_steps occupied samples, examining at most max_candidates
// steps. Writes the samples to t_starts/t_ends (row of n_steps, zero padded) and returns t of the first step not
// examined (where the ray resumes).
R3D_HD float march_inference_ray(const StepParams& p, const GridGeom& g, const uint8_t* bitfield, const float* o,
                                 const float* d, float t, float t_far, int64_t n_steps, int64_t max_candidates,
                                 float* t_starts, float* t_ends) {
  for (int64_t i = 0; i < n_steps; ++i) t_starts[i] = t_ends[i] = 0.0f;
  if (!(t < t_far)) return t;
  const RaySchedule s = make_ray_schedule(p, t);
  int64_t j = 0, found = 0;
  while (j < max_candidates) {
    const float t0 = schedule_t(p, s, static_cast<float>(j));
    if (!(t0 < t_far)) break;
    float t1;
    if (candidate_occupied(p, g, bitfield, o, d, t0, t_far, &t1)) {
      t_starts[found] = t0;
      t_ends[found] = t1;
      ++found;
    }
    ++j;
    if (found == n_steps) break;
  }
  return schedule_t(p, s, static_cast<float>(j));
}

// ---------------------------------------------------------------------------------------------------------------
// Volume rendering along one ray segment [begin, end) of packed samples
// ---------------------------------------------------------------------------------------------------------------
// T_i = exp(-sum_{j<i} tau_j), tau_j = sigma_j (t1_j - t0_j), w_i = T_i (1 - exp(-tau_i)), zeroed where T_i < t_thresh.
// The optical depth is accumulated in double, like the reference's float64 prefix sum.
R3D_HD void render_weights_segment(int64_t begin, int64_t end, const float* sigmas, const float* t_starts,
                                   const float* t_ends, float t_thresh, float* weights, float* trans) {
  double depth = 0.0;
  for (int64_t i = begin; i < end; ++i) {
    const float tau = sigmas[i] * (t_ends[i] - t_starts[i]);
    const float T = expf(-static_cast<float>(depth));
    const float alpha = 1.0f - expf(-tau);
    weights[i] = T >= t_thresh ? T * alpha : 0.0f;
    trans[i] = T;
    depth += tau;
  }
}

// Gradient of sum(gw * w + gT * T) w.r.t. sigma:
//   dL/dtau_j = [T_j >= thr] gw_j T_j exp(-tau_j) - sum_{i>j} (gw_i w_i + gT_i T_i)     (w_i already masked)
//   dL/dsigma_j = dL/dtau_j * (t1_j - t0_j)
// grad_trans may be null (composite: no cotangent on T). Accumulated back to front in double.
R3D_HD void render_weights_segment_bwd(int64_t begin, int64_t end, const float* grad_w, const float* grad_trans,
                                       const float* sigmas, const float* t_starts, const float* t_ends,
                                       const float* weights, const float* trans, float t_thresh,
                                       float* grad_sigmas) {
  double later = 0.0;  // sum over later samples of gw_i w_i + gT_i T_i
  for (int64_t i = end - 1; i >= begin; --i) {
    const float dt = t_ends[i] - t_starts[i];
    const float tau = sigmas[i] * dt;
    const float T = trans[i];
    const float own = T >= t_thresh ? grad_w[i] * (T * expf(-tau)) : 0.0f;
    grad_sigmas[i] = static_cast<float>(static_cast<double>(own) - later) * dt;
    later += static_cast<double>(grad_w[i]) * weights[i];
    if (grad_trans != nullptr) later += static_cast<double>(grad_trans[i]) * T;
  }
}

// Fused compositing of one ray: weights and trans per sample; rgb, depth (weighted midpoint t), acc per ray.
R3D_HD void composite_segment(int64_t begin, int64_t end, const float* sigmas, const float* rgbs,
                              const float* t_starts, const float* t_ends, float t_thresh, float* weights,
                              float* trans, float* rgb_out, float* depth_out, float* acc_out) {
  render_weights_segment(begin, end, sigmas, t_starts, t_ends, t_thresh, weights, trans);
  float r = 0.0f, gch = 0.0f, b = 0.0f, dep = 0.0f, acc = 0.0f;
  for (int64_t i = begin; i < end; ++i) {
    const float w = weights[i];
    r += w * rgbs[3 * i];
    gch += w * rgbs[3 * i + 1];
    b += w * rgbs[3 * i + 2];
    dep += w * ((t_starts[i] + t_ends[i]) * 0.5f);
    acc += w;
  }
  rgb_out[0] = r;
  rgb_out[1] = gch;
  rgb_out[2] = b;
  *depth_out = dep;
  *acc_out = acc;
}

// Backward of composite_segment: the per-sample cotangent on w is gw_i + g_rgb . rgb_i + g_depth mid_i + g_acc,
// then the render_weights backward (without a T cotangent); d rgb_i = g_rgb w_i.
R3D_HD void composite_segment_bwd(int64_t begin, int64_t end, const float* grad_w, const float* grad_rgb,
                                  float grad_depth, float grad_acc, const float* sigmas, const float* rgbs,
                                  const float* t_starts, const float* t_ends, const float* weights,
                                  const float* trans, float t_thresh, float* grad_sigmas, float* grad_rgbs) {
  double later = 0.0;
  for (int64_t i = end - 1; i >= begin; --i) {
    const float mid = (t_starts[i] + t_ends[i]) * 0.5f;
    const float gw = grad_w[i] + grad_rgb[0] * rgbs[3 * i] + grad_rgb[1] * rgbs[3 * i + 1] +
                     grad_rgb[2] * rgbs[3 * i + 2] + grad_depth * mid + grad_acc;
    const float w = weights[i];
    grad_rgbs[3 * i] = grad_rgb[0] * w;
    grad_rgbs[3 * i + 1] = grad_rgb[1] * w;
    grad_rgbs[3 * i + 2] = grad_rgb[2] * w;
    const float dt = t_ends[i] - t_starts[i];
    const float tau = sigmas[i] * dt;
    const float T = trans[i];
    const float own = T >= t_thresh ? gw * (T * expf(-tau)) : 0.0f;
    grad_sigmas[i] = static_cast<float>(static_cast<double>(own) - later) * dt;
    later += static_cast<double>(gw) * w;
  }
}

// One row of composite_rays_inference: front-to-back over the row's samples (slots with t_end <= t_start are
// padding), adding to the ray's rgb/depth/acc and updating its transmittance. Returns the new transmittance.
R3D_HD float composite_inference_row(int64_t n, const float* sigmas, const float* rgbs, const float* t_starts,
                                     const float* t_ends, float t_thresh, float T0, float* rgb, float* depth,
                                     float* acc) {
  double od = 0.0;  // optical depth accumulated in this row
  float r = 0.0f, gch = 0.0f, b = 0.0f, dep = 0.0f, a = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float dt = t_ends[i] - t_starts[i];
    if (!(dt > 0.0f)) continue;
    const float tau = sigmas[i] * dt;
    const float T = T0 * expf(-static_cast<float>(od));
    od += tau;
    if (!(T >= t_thresh)) continue;
    const float w = T * (1.0f - expf(-tau));
    r += w * rgbs[3 * i];
    gch += w * rgbs[3 * i + 1];
    b += w * rgbs[3 * i + 2];
    dep += w * ((t_starts[i] + t_ends[i]) * 0.5f);
    a += w;
  }
  rgb[0] += r;
  rgb[1] += gch;
  rgb[2] += b;
  *depth += dep;
  *acc += a;
  return T0 * expf(-static_cast<float>(od));
}

}  // namespace relight3d
