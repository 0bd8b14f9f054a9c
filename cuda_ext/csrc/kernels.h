// The work of each op on one item (element, ray, row or run of a ray's samples), as functors that the loops of
// parallel.h run on the CPU or on CUDA: the same code on both devices. Each holds raw pointers into the op's
// contiguous tensors (set up by its entry point in <op>.cpp) and calls the per-sample math of common.h.
//
// An index read from an input that is out of range raises on the CPU (R3D_CHECK_INDEX); a CUDA thread cannot raise,
// so there the item is left empty (zeros, or "not alive").
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>

#include "common.h"

#if defined(__CUDA_ARCH__)
#define R3D_CHECK_INDEX(cond, ...) \
  do {                             \
  } while (0)
#else
#define R3D_CHECK_INDEX(cond, ...) TORCH_CHECK(cond, __VA_ARGS__)
#endif

namespace relight3d {

// *p += v, atomically on CUDA; the CPU loops that use it run on one thread (kSerial).
R3D_HD void add_to(float* p, float v) {
#if defined(__CUDA_ARCH__)
  atomicAdd(p, v);
#else
  *p += v;
#endif
}

// The geometry of an occupancy grid, computed once on the host from a CPU aabb; from a CUDA aabb each thread computes
// it (so that the aabb never has to be copied to the host).
struct GridRef {
  GridGeom host;
  const float* device_aabb;  // null for a CPU aabb
  R3D_HD GridGeom geom() const {
    return device_aabb != nullptr ? make_grid_geom(device_aabb, host.n_cascades, host.res) : host;
  }
};

// For the entry points (host code): a GridRef of an aabb tensor.
inline GridRef grid_ref(const at::Tensor& aabb, int64_t n_cascades, int64_t res) {
  const bool host = aabb.device().is_cpu();
  const float unit[6] = {-1.0f, -1.0f, -1.0f, 1.0f, 1.0f, 1.0f};  // placeholder: the threads compute the geometry
  return {make_grid_geom(host ? aabb.data_ptr<float>() : unit, static_cast<int>(n_cascades), static_cast<int>(res)),
          host ? nullptr : aabb.data_ptr<float>()};
}

// Raw pointers of the functors' inputs and outputs (null for an empty optional).
template <typename T>
const T* cptr(const at::Tensor& t) {
  return t.data_ptr<T>();
}
template <typename T>
const T* cptr(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}
template <typename T>
T* ptr(const at::Tensor& t) {
  return t.data_ptr<T>();
}

// ---------------------------------------------------------------------------------------------------------------
// Rays, Morton codes and occupancy grids: one item per element
// ---------------------------------------------------------------------------------------------------------------
struct RayAabb {
  const float *o, *d, *aabb;
  float near_min;
  float *t_near, *t_far;
  R3D_HD void operator()(int64_t i) const { ray_aabb(o + 3 * i, d + 3 * i, aabb, near_min, t_near + i, t_far + i); }
};

struct Morton3d {
  const int64_t* coords;
  int64_t* codes;
  R3D_HD void operator()(int64_t i) const { codes[i] = morton3d(coords[3 * i], coords[3 * i + 1], coords[3 * i + 2]); }
};

struct Morton3dInvert {
  const int64_t* codes;
  int64_t* coords;
  R3D_HD void operator()(int64_t i) const {
    for (int a = 0; a < 3; ++a) coords[3 * i + a] = compact_bits(codes[i] >> a);
  }
};

struct CellPositions {
  GridRef grid;
  const int64_t* indices;
  const float* jitter;  // [n, 3], or null for cell centres
  float* out;
  R3D_HD void operator()(int64_t i) const {
    const float* j = jitter != nullptr ? jitter + 3 * i : nullptr;
    cell_position(grid.geom(), indices[i], j ? j[0] : 0.5f, j ? j[1] : 0.5f, j ? j[2] : 0.5f, out + 3 * i);
  }
};

// byte i of the bitfield: cells 8i .. 8i + 7 above the threshold
struct PackBitfield {
  const float* grid;
  float threshold;
  uint8_t* bits;
  R3D_HD void operator()(int64_t i) const {
    uint8_t byte = 0;
    for (int bit = 0; bit < 8; ++bit) byte |= static_cast<uint8_t>(grid[8 * i + bit] > threshold) << bit;
    bits[i] = byte;
  }
};

struct UnpackBitfield {
  const uint8_t* bits;
  bool* cells;
  R3D_HD void operator()(int64_t i) const {
    const uint8_t byte = bits[i];
    for (int bit = 0; bit < 8; ++bit) cells[8 * i + bit] = (byte >> bit) & 1;
  }
};

struct OccupancyLookup {
  GridRef grid;
  const uint8_t* bits;
  const float* positions;
  bool* out;
  R3D_HD void operator()(int64_t i) const {
    const float* p = positions + 3 * i;
    out[i] = grid_occupied(grid.geom(), bits, p[0], p[1], p[2]);
  }
};

// ---------------------------------------------------------------------------------------------------------------
// Marching: one item per ray
// ---------------------------------------------------------------------------------------------------------------
// The rays and grid of a march.
struct MarchInputs {
  const float *o, *d;
  const uint8_t* bits;
  GridRef grid;
  StepParams steps;
};

// march_rays_train: the rays' intervals, and the shared march of one ray over steps [k_begin, k_end).
struct TrainRays {
  MarchInputs in;
  const float *t_near, *t_far, *jitter;  // jitter may be null
  int64_t max_steps;
  template <typename Emit>
  R3D_HD int64_t march(int64_t r, int64_t k_begin, int64_t k_end, Emit&& emit) const {
    return march_train_ray(in.steps, in.grid.geom(), in.bits, in.o + 3 * r, in.d + 3 * r, t_near[r], t_far[r],
                           jitter != nullptr ? jitter[r] : 0.0f, max_steps, k_begin, k_end, emit);
  }
};

// Pass 1: the number of kept samples of each ray, and its first and last kept step.
struct MarchTrainCount {
  TrainRays rays;
  int64_t *counts, *k_first, *k_last;
  R3D_HD void operator()(int64_t r) const {
    KeptRange range;
    counts[r] = rays.march(r, 0, rays.max_steps, range);
    k_first[r] = range.first;
    k_last[r] = range.last;
  }
};

// Pass 2: each ray writes its samples at its offset (the cumulative count minus its own), walking only the steps
// between its first and last kept ones.
struct MarchTrainFill {
  TrainRays rays;
  const int64_t *counts, *cum_counts, *k_first, *k_last;
  int64_t* ray_indices;
  float *t_starts, *t_ends;
  struct Write {
    const MarchTrainFill& f;
    int64_t base, r;
    R3D_HD void operator()(int64_t slot, int64_t, float t0, float t1) const {
      f.ray_indices[base + slot] = r;
      f.t_starts[base + slot] = t0;
      f.t_ends[base + slot] = t1;
    }
  };
  R3D_HD void operator()(int64_t r) const {
    if (counts[r] == 0) return;
    rays.march(r, k_first[r], k_last[r] + 1, Write{*this, cum_counts[r] - counts[r], r});
  }
};

// march_rays_inference: row i marches ray alive[i] from its t (advanced in place).
struct MarchInference {
  MarchInputs in;
  float* t;
  const float* t_far;
  const int64_t* alive;
  int64_t n_rays, n_steps, max_candidates;
  float *t_starts, *t_ends;
  R3D_HD void operator()(int64_t i) const {
    const int64_t r = alive[i];
    float* ts = t_starts + i * n_steps;
    float* te = t_ends + i * n_steps;
    if (r < 0 || r >= n_rays) {
      R3D_CHECK_INDEX(false, "march_rays_inference: alive ray ", r, " out of range [0, ", n_rays, ")");
      for (int64_t k = 0; k < n_steps; ++k) ts[k] = te[k] = 0.0f;
      return;
    }
    t[r] = march_inference_ray(in.steps, in.grid.geom(), in.bits, in.o + 3 * r, in.d + 3 * r, t[r], t_far[r],
                               n_steps, max_candidates, ts, te);
  }
};

// ---------------------------------------------------------------------------------------------------------------
// Volume rendering: one item per run [b, e) of a ray's packed samples, per sample, or per row
// ---------------------------------------------------------------------------------------------------------------
// Packed samples sorted by ray.
struct Samples {
  const float *sigmas, *t_starts, *t_ends;
  float t_thresh;
};

struct RenderWeights {
  Samples s;
  float *weights, *trans;
  R3D_HD void operator()(int64_t, int64_t b, int64_t e) const {
    render_weights_segment(b, e, s.sigmas, s.t_starts, s.t_ends, s.t_thresh, weights, trans);
  }
};

struct RenderWeightsBackward {
  Samples s;
  const float *weights, *trans, *grad_weights, *grad_trans;  // grad_trans may be null
  float* grad_sigmas;
  R3D_HD void operator()(int64_t, int64_t b, int64_t e) const {
    render_weights_segment_bwd(b, e, grad_weights, grad_trans, s.sigmas, s.t_starts, s.t_ends, weights, trans,
                               s.t_thresh, grad_sigmas);
  }
};

struct Composite {
  Samples s;
  const float* rgbs;
  float *weights, *trans, *image, *depth, *acc;
  R3D_HD void operator()(int64_t r, int64_t b, int64_t e) const {
    composite_segment(b, e, s.sigmas, rgbs, s.t_starts, s.t_ends, s.t_thresh, weights, trans, image + 3 * r,
                      depth + r, acc + r);
  }
};

struct CompositeBackward {
  Samples s;
  const float *rgbs, *weights, *trans, *grad_weights, *grad_image, *grad_depth, *grad_acc;
  float *grad_sigmas, *grad_rgbs;
  R3D_HD void operator()(int64_t r, int64_t b, int64_t e) const {
    composite_segment_bwd(b, e, grad_weights, grad_image + 3 * r, grad_depth[r], grad_acc[r], s.sigmas, rgbs,
                          s.t_starts, s.t_ends, weights, trans, s.t_thresh, grad_sigmas, grad_rgbs);
  }
};

// Per sample i of ray r: out[r] += w_i v_i (c channels; w_i alone when values is null). Samples in any order.
struct Accumulate {
  const float *weights, *values;
  const int64_t* ray;
  int64_t n_rays, c;
  float* out;
  R3D_HD void operator()(int64_t i) const {
    const int64_t r = ray[i];
    if (r < 0 || r >= n_rays) {
      R3D_CHECK_INDEX(false, "accumulate_along_rays: ray index ", r, " out of range [0, ", n_rays, ")");
      return;
    }
    for (int64_t ch = 0; ch < c; ++ch) {
      add_to(out + r * c + ch, values != nullptr ? weights[i] * values[i * c + ch] : weights[i]);
    }
  }
};

// d out[r] / d w_i = g[r] . v_i, d out[r] / d v_i = g[r] w_i
struct AccumulateBackward {
  const float *weights, *values, *grad_out;
  const int64_t* ray;
  int64_t n_rays, c;
  float *grad_weights, *grad_values;  // grad_values null when values is
  R3D_HD void operator()(int64_t i) const {
    const int64_t r = ray[i];
    const bool inside = r >= 0 && r < n_rays;
    R3D_CHECK_INDEX(inside, "accumulate_along_rays: ray index ", r, " out of range [0, ", n_rays, ")");
    float gw = 0.0f;
    for (int64_t ch = 0; ch < c; ++ch) {
      const float g = inside ? grad_out[r * c + ch] : 0.0f;
      gw += values != nullptr ? g * values[i * c + ch] : g;
      if (values != nullptr) grad_values[i * c + ch] = g * weights[i];
    }
    grad_weights[i] = gw;
  }
};

// composite_rays_inference: row i (ray alive[i]) composited into the ray's state; still[i]: whether it stays alive.
struct CompositeInference {
  const float *sigmas, *rgbs, *t_starts, *t_ends;
  const int64_t* alive;
  int64_t n_rays, k;
  const float *t, *t_far;
  float *image, *depth, *acc, *trans;
  float t_thresh;
  bool* still;
  R3D_HD void operator()(int64_t i) const {
    const int64_t r = alive[i];
    if (r < 0 || r >= n_rays) {
      R3D_CHECK_INDEX(false, "composite_rays_inference: alive ray ", r, " out of range [0, ", n_rays, ")");
      still[i] = false;
      return;
    }
    const float T = composite_inference_row(k, sigmas + i * k, rgbs + 3 * i * k, t_starts + i * k, t_ends + i * k,
                                            t_thresh, trans[r], image + 3 * r, depth + r, acc + r);
    trans[r] = T;
    still[i] = T >= t_thresh && t[r] < t_far[r];
  }
};

}  // namespace relight3d
