// Sampling of a TensoRF VM decomposition: CPU kernels (see vm_common.h for what is computed).
//
// Memory layout. planes [3, C, H, W] keep each channel's image contiguous, so one bilinear lookup of all channels
// touches two cache lines per channel. The main path works on channel blocks of K (16 when C allows) stored
// channels-last with a zero border: block [(H + 2) * (W + 2), K], node (y, x) at ((y + 1) * (W + 2) + x + 1) * K.
// A lookup then reads (and the backward writes) two runs of 2K contiguous floats, four cache lines for 16 channels,
// and the zero border plays grid_sample's zeros padding: a corner outside the image reads 0 and its gradient lands
// in the border, which is dropped, so the inner loops have no bounds checks. Lines get the same treatment.
// (Measured on 100K points along rays: blocks of 16 make the backward about twice as fast as blocks of 8, whose
// per-point overhead is spread over fewer channels; scattering in the original layout was 2-3x slower than those.)
//
// Forward: every (block, chunk of points) is an independent task that writes K contiguous columns of each of its
// rows; a thread builds the padded copy of a block once for its consecutive chunks of that block.
//
// Backward: the scatter into the plane gradients would race between points, so the work is split by gradient
// memory instead: one task per (pair, channel block) owns that block's gradient, builds the padded plane/line block
// it needs for the products in a buffer of its own, accumulates over all points (in order, hence deterministic),
// and finally writes its gradient block into grad_planes / grad_lines. There are 3 * C / K such tasks (3 for C = 16,
// 9 for C = 48): enough for a few cores, not for many.
//
// Per-point interpolation taps (nodes and weights of the three pairs) are computed once per call in a first
// parallel pass, and shared by all channel blocks. The taps and the padded blocks live in scratch memory that each
// thread keeps between calls (see scratch()).
//
// For few points (fewer than a sixteenth of a plane's nodes) building padded copies would cost more than the
// lookups; a direct path then reads and scatters in the original layout with bounds checks.
#include "parallel.h"
#include "ops.h"
#include "vm_common.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

namespace relight3d {
namespace cpu {

namespace {

struct VmShape {
  int64_t n, C, H, W, L;
  int64_t padded_width() const { return W + 2; }
  int64_t padded_plane() const { return (H + 2) * (W + 2); }
  int64_t padded_line() const { return L + 2; }
};

// Interpolation taps of one point for one pair, as nodes of the padded layout: the plane's corner (y0, x0) is
// padded node (y, x), its other corners (y, x + 1), (y + 1, x), (y + 1, x + 1); the line's nodes are l and l + 1.
// x = kTapZero: the pair contributes 0 (its plane or line lookup is entirely outside, so their product is 0);
// x = kTapNaN: the point has a non-finite coordinate and gets NaN features, as from grid_sample.
struct VmTap {
  int32_t x, y, l;
  // Weights of the x0 + 1, y0 + 1 and l0 + 1 nodes. The others get 1 - w: the same float as grid_sample's
  // (i0 + 1) - pix whenever node i0 is inside (pix - i0 is exact, so both round the same real number once), and
  // when it is outside its weight multiplies the zero border.
  float wx, wy, wl;
};
constexpr int32_t kTapZero = -1;
constexpr int32_t kTapNaN = -2;

// Temporary memory of the calling thread. Buffers of up to kKeptScratchBytes are kept between calls, one per slot
// and thread: a fresh allocation of megabytes costs more in page faults than the kernels spend using it (glibc
// returns large blocks to the system at once). Larger requests go to `large`, freed by the caller.
constexpr int64_t kKeptScratchBytes = int64_t{64} << 20;
constexpr int kTapSlot = 0;    // the taps of one call (calling thread only)
constexpr int kBlockSlot = 1;  // the padded blocks of one task (every thread)

template <typename T, int Slot>
T* scratch(int64_t n, std::vector<T>* large) {
  thread_local std::vector<T> kept;
  std::vector<T>& buffer = n * static_cast<int64_t>(sizeof(T)) <= kKeptScratchBytes ? kept : *large;
  if (static_cast<int64_t>(buffer.size()) < n) buffer.resize(n);
  return buffer.data();
}

// taps[p * n + i] for pair p and point i
void compute_taps(const VmShape& s, const float* xyz, VmTap* taps) {
  at::parallel_for(0, s.n, kGrainElementwise / 8, [&](int64_t begin, int64_t end) {
    for (int p = 0; p < 3; ++p) {
      const int ax = vm_plane_x_axis(p), ay = vm_plane_y_axis(p), al = vm_line_axis(p);
      VmTap* t = taps + p * s.n;
      for (int64_t i = begin; i < end; ++i) {
        const float* q = xyz + 3 * i;
        const AxisNodes x = axis_nodes(q[ax], s.W);
        const AxisNodes y = axis_nodes(q[ay], s.H);
        const AxisNodes l = axis_nodes(q[al], s.L);
        VmTap tap{kTapZero, 0, 0, x.w1, y.w1, l.w1};
        if (!(std::isfinite(q[0]) && std::isfinite(q[1]) && std::isfinite(q[2]))) {
          tap.x = kTapNaN;
        } else if ((x.valid0 || x.valid1) && (y.valid0 || y.valid1) && (l.valid0 || l.valid1)) {
          tap.x = static_cast<int32_t>(x.i0 + 1);
          tap.y = static_cast<int32_t>(y.i0 + 1);
          tap.l = static_cast<int32_t>(l.i0 + 1);
        }
        t[i] = tap;
      }
    }
  });
}

// Corner weights of a tap, with grid_sample's products (y weight times x weight).
struct CornerWeights {
  float w00, w01, w10, w11, l0, l1;
};

inline CornerWeights corner_weights(const VmTap& t) {
  const float wx0 = 1.0f - t.wx, wy0 = 1.0f - t.wy;
  return {wy0 * wx0, wy0 * t.wx, t.wy * wx0, t.wy * t.wx, 1.0f - t.wl, t.wl};
}

// ---------------------------------------------------------------------------------------------------------------
// Padded channel blocks
// ---------------------------------------------------------------------------------------------------------------

// K images src [K, h, w] (channel stride h * w) -> dst [(h + 2) * (w + 2), K] with a zero border.
template <int K>
void pad_block(const float* __restrict src, int64_t h, int64_t w, float* __restrict dst) {
  const int64_t wp = w + 2;
  std::memset(dst, 0, sizeof(float) * wp * K);                  // top border row
  std::memset(dst + (h + 1) * wp * K, 0, sizeof(float) * wp * K);  // bottom border row
  for (int64_t y = 0; y < h; ++y) {
    float* row = dst + (y + 1) * wp * K;
    std::memset(row, 0, sizeof(float) * K);
    std::memset(row + (w + 1) * K, 0, sizeof(float) * K);
    for (int64_t x = 0; x < w; ++x) {
      float* d = row + (x + 1) * K;
      for (int k = 0; k < K; ++k) d[k] = src[(k * h + y) * w + x];
    }
  }
}

// Inverse of pad_block, dropping the border.
template <int K>
void unpad_block(const float* __restrict src, int64_t h, int64_t w, float* __restrict dst) {
  const int64_t wp = w + 2;
  for (int k = 0; k < K; ++k) {
    for (int64_t y = 0; y < h; ++y) {
      const float* row = src + (y + 1) * wp * K;
      float* d = dst + (k * h + y) * w;
      for (int64_t x = 0; x < w; ++x) d[x] = row[(x + 1) * K + k];
    }
  }
}

// Lines [K, l, 1] are images of width 1; padded as [l + 2, K] (no left/right border needed).
template <int K>
void pad_line(const float* __restrict src, int64_t l, float* __restrict dst) {
  std::memset(dst, 0, sizeof(float) * K);
  std::memset(dst + (l + 1) * K, 0, sizeof(float) * K);
  for (int64_t y = 0; y < l; ++y) {
    for (int k = 0; k < K; ++k) dst[(y + 1) * K + k] = src[k * l + y];
  }
}

template <int K>
void unpad_line(const float* __restrict src, int64_t l, float* __restrict dst) {
  for (int k = 0; k < K; ++k) {
    for (int64_t y = 0; y < l; ++y) dst[k * l + y] = src[(y + 1) * K + k];
  }
}

// Features of points [begin, end) for one padded block; out points at the block's first column of row 0.
template <int K>
void forward_block(const VmTap* __restrict taps, int64_t begin, int64_t end, const float* __restrict plane,
                   const float* __restrict line, int64_t wp, float* __restrict out, int64_t row_stride) {
  for (int64_t i = begin; i < end; ++i) {
    const VmTap t = taps[i];
    float* __restrict o = out + i * row_stride;
    if (t.x < 0) {
      const float v = t.x == kTapNaN ? std::numeric_limits<float>::quiet_NaN() : 0.0f;
      for (int k = 0; k < K; ++k) o[k] = v;
      continue;
    }
    const CornerWeights w = corner_weights(t);
    const float* __restrict r0 = plane + (static_cast<int64_t>(t.y) * wp + t.x) * K;  // row y0: x0, x1
    const float* __restrict r1 = r0 + wp * K;                                        // row y1
    const float* __restrict l0 = line + static_cast<int64_t>(t.l) * K;
    for (int k = 0; k < K; ++k) {
      const float pv = r0[k] * w.w00 + r0[K + k] * w.w01 + r1[k] * w.w10 + r1[K + k] * w.w11;
      const float lv = l0[k] * w.l0 + l0[K + k] * w.l1;
      o[k] = pv * lv;
    }
  }
}

// Accumulates the gradients of all points into one padded block (grad_plane, grad_line zeroed by the caller);
// grad_out points at the block's first column of row 0.
template <int K>
void backward_block(const VmTap* __restrict taps, int64_t n, const float* __restrict grad_out, int64_t row_stride,
                    const float* __restrict plane, const float* __restrict line, int64_t wp,
                    float* __restrict grad_plane, float* __restrict grad_line) {
  for (int64_t i = 0; i < n; ++i) {
    const VmTap t = taps[i];
    if (t.x < 0) continue;
    const CornerWeights w = corner_weights(t);
    const int64_t corner = (static_cast<int64_t>(t.y) * wp + t.x) * K;
    const float* __restrict r0 = plane + corner;
    const float* __restrict r1 = r0 + wp * K;
    const float* __restrict l0 = line + static_cast<int64_t>(t.l) * K;
    const float* __restrict g = grad_out + i * row_stride;
    float* __restrict g0 = grad_plane + corner;
    float* __restrict g1 = g0 + wp * K;
    float* __restrict gl = grad_line + static_cast<int64_t>(t.l) * K;
    for (int k = 0; k < K; ++k) {
      const float pv = r0[k] * w.w00 + r0[K + k] * w.w01 + r1[k] * w.w10 + r1[K + k] * w.w11;
      const float lv = l0[k] * w.l0 + l0[K + k] * w.l1;
      const float gp = g[k] * lv;  // d out / d plane value
      const float gv = g[k] * pv;  // d out / d line value
      g0[k] += w.w00 * gp;
      g0[K + k] += w.w01 * gp;
      g1[k] += w.w10 * gp;
      g1[K + k] += w.w11 * gp;
      gl[k] += w.l0 * gv;
      gl[K + k] += w.l1 * gv;
    }
  }
}

template <int K>
void forward_padded(const VmShape& s, const float* planes, const float* lines, const VmTap* taps, float* out) {
  const int64_t blocks_per_pair = s.C / K, n_blocks = 3 * blocks_per_pair;
  const int64_t plane_size = s.padded_plane() * K, line_size = s.padded_line() * K;
  // Tasks (block, chunk of points), chunks running fastest: each thread gets consecutive chunks of a few blocks and
  // pads each of those blocks once into its scratch buffer (a block split between two threads is padded by both).
  const int64_t chunk = std::max<int64_t>(4096, (s.n + 3) / 4);
  const int64_t n_chunks = (s.n + chunk - 1) / chunk;
  at::parallel_for(0, n_blocks * n_chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> large;
    float* plane = scratch<float, kBlockSlot>(plane_size + line_size, &large);
    float* line = plane + plane_size;
    int64_t padded = -1;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t j = task / n_chunks, c = task % n_chunks;
      if (j != padded) {
        pad_block<K>(planes + j * K * s.H * s.W, s.H, s.W, plane);
        pad_line<K>(lines + j * K * s.L, s.L, line);
        padded = j;
      }
      const int64_t pair = j / blocks_per_pair;
      forward_block<K>(taps + pair * s.n, c * chunk, std::min(s.n, (c + 1) * chunk), plane, line, s.padded_width(),
                       out + j * K, 3 * s.C);
    }
  });
}

template <int K>
void backward_padded(const VmShape& s, const float* grad_out, const float* planes, const float* lines,
                     const VmTap* taps, float* grad_planes, float* grad_lines) {
  const int64_t blocks_per_pair = s.C / K, n_blocks = 3 * blocks_per_pair;
  const int64_t plane_size = s.padded_plane() * K, line_size = s.padded_line() * K;
  at::parallel_for(0, n_blocks, 1, [&](int64_t begin, int64_t end) {
    // this thread's buffers: the padded plane and line block, and their gradients
    std::vector<float> large;
    float* pb = scratch<float, kBlockSlot>(2 * (plane_size + line_size), &large);
    float* gpb = pb + plane_size;
    float* lb = gpb + plane_size;
    float* glb = lb + line_size;
    for (int64_t j = begin; j < end; ++j) {
      pad_block<K>(planes + j * K * s.H * s.W, s.H, s.W, pb);
      pad_line<K>(lines + j * K * s.L, s.L, lb);
      std::memset(gpb, 0, sizeof(float) * plane_size);
      std::memset(glb, 0, sizeof(float) * line_size);
      const int64_t pair = j / blocks_per_pair;
      backward_block<K>(taps + pair * s.n, s.n, grad_out + j * K, 3 * s.C, pb, lb, s.padded_width(), gpb, glb);
      unpad_block<K>(gpb, s.H, s.W, grad_planes + j * K * s.H * s.W);
      unpad_line<K>(glb, s.L, grad_lines + j * K * s.L);
    }
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Direct paths (few points): original layout, bounds checks per corner
// ---------------------------------------------------------------------------------------------------------------

// Offsets (into one [h, w] image) and weights of the four plane corners and the two line nodes of a tap whose
// x >= 0; corners outside get weight 0 and offset 0.
struct DirectTaps {
  int64_t o00, o01, o10, o11, l0, l1;
  CornerWeights w;
};

inline DirectTaps direct_taps(const VmTap& t, const VmShape& s) {
  DirectTaps d{0, 0, 0, 0, 0, 0, corner_weights(t)};
  const int64_t x0 = t.x - 1, y0 = t.y - 1, l0 = t.l - 1;  // unpadded first nodes, in [-1, size - 1]
  const bool vx0 = x0 >= 0, vx1 = x0 + 1 < s.W, vy0 = y0 >= 0, vy1 = y0 + 1 < s.H;
  const auto node = [](bool valid, int64_t offset, int64_t* o, float* w) {
    if (valid) {
      *o = offset;
    } else {
      *w = 0.0f;
    }
  };
  node(vy0 && vx0, y0 * s.W + x0, &d.o00, &d.w.w00);
  node(vy0 && vx1, y0 * s.W + x0 + 1, &d.o01, &d.w.w01);
  node(vy1 && vx0, (y0 + 1) * s.W + x0, &d.o10, &d.w.w10);
  node(vy1 && vx1, (y0 + 1) * s.W + x0 + 1, &d.o11, &d.w.w11);
  node(l0 >= 0, l0, &d.l0, &d.w.l0);
  node(l0 + 1 < s.L, l0 + 1, &d.l1, &d.w.l1);
  return d;
}

// Reads an outside corner as 0 (its weight is 0 too), so the sums are those of the padded path.
inline float direct_bilinear(const float* img, const DirectTaps& d) {
  const float v00 = d.w.w00 != 0.0f ? img[d.o00] : 0.0f;
  const float v01 = d.w.w01 != 0.0f ? img[d.o01] : 0.0f;
  const float v10 = d.w.w10 != 0.0f ? img[d.o10] : 0.0f;
  const float v11 = d.w.w11 != 0.0f ? img[d.o11] : 0.0f;
  return v00 * d.w.w00 + v01 * d.w.w01 + v10 * d.w.w10 + v11 * d.w.w11;
}

inline float direct_linear(const float* line, const DirectTaps& d) {
  const float v0 = d.w.l0 != 0.0f ? line[d.l0] : 0.0f;
  const float v1 = d.w.l1 != 0.0f ? line[d.l1] : 0.0f;
  return v0 * d.w.l0 + v1 * d.w.l1;
}

void forward_direct(const VmShape& s, const float* planes, const float* lines, const VmTap* taps, float* out) {
  const int64_t hw = s.H * s.W;
  at::parallel_for(0, s.n, 256, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      for (int p = 0; p < 3; ++p) {
        const VmTap& t = taps[p * s.n + i];
        float* o = out + i * 3 * s.C + p * s.C;
        if (t.x < 0) {
          const float v = t.x == kTapNaN ? std::numeric_limits<float>::quiet_NaN() : 0.0f;
          for (int64_t c = 0; c < s.C; ++c) o[c] = v;
          continue;
        }
        const DirectTaps d = direct_taps(t, s);
        for (int64_t c = 0; c < s.C; ++c) {
          o[c] = direct_bilinear(planes + (p * s.C + c) * hw, d) * direct_linear(lines + (p * s.C + c) * s.L, d);
        }
      }
    }
  });
}

// One task per (pair, channel): it owns that channel's gradient image and line.
void backward_direct(const VmShape& s, const float* grad_out, const float* planes, const float* lines,
                     const VmTap* taps, float* grad_planes, float* grad_lines) {
  const int64_t hw = s.H * s.W;
  at::parallel_for(0, 3 * s.C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      const int64_t p = j / s.C;
      const float* img = planes + j * hw;
      const float* line = lines + j * s.L;
      float* gimg = grad_planes + j * hw;
      float* gline = grad_lines + j * s.L;
      for (int64_t i = 0; i < s.n; ++i) {
        const VmTap& t = taps[p * s.n + i];
        if (t.x < 0) continue;
        const DirectTaps d = direct_taps(t, s);
        const float g = grad_out[i * 3 * s.C + j];
        const float gp = g * direct_linear(line, d);
        const float gv = g * direct_bilinear(img, d);
        if (d.w.w00 != 0.0f) gimg[d.o00] += d.w.w00 * gp;
        if (d.w.w01 != 0.0f) gimg[d.o01] += d.w.w01 * gp;
        if (d.w.w10 != 0.0f) gimg[d.o10] += d.w.w10 * gp;
        if (d.w.w11 != 0.0f) gimg[d.o11] += d.w.w11 * gp;
        if (d.w.l0 != 0.0f) gline[d.l0] += d.w.l0 * gv;
        if (d.w.l1 != 0.0f) gline[d.l1] += d.w.l1 * gv;
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------------------------

// Calls f(std::integral_constant<int, K>) with the largest K in {16, 8, 4, 2, 1} dividing C.
template <typename F>
void with_block_size(int64_t c, const F& f) {
  if (c % 16 == 0) {
    f(std::integral_constant<int, 16>{});
  } else if (c % 8 == 0) {
    f(std::integral_constant<int, 8>{});
  } else if (c % 4 == 0) {
    f(std::integral_constant<int, 4>{});
  } else if (c % 2 == 0) {
    f(std::integral_constant<int, 2>{});
  } else {
    f(std::integral_constant<int, 1>{});
  }
}

VmShape shape_of(const Tensor& planes, const Tensor& lines, const Tensor& xyz) {
  return {xyz.size(0), planes.size(1), planes.size(2), planes.size(3), lines.size(2)};
}

// Few points: the padded copies (passes over every plane) would cost more than the lookups they speed up. The
// direct path costs about twice as much per point (measured crossover near H * W / 12 points).
bool few_points(const VmShape& s) { return 16 * s.n < s.H * s.W; }

// The taps of all points and pairs, in the calling thread's scratch memory (or in `large`).
const VmTap* taps_of(const VmShape& s, const Tensor& xyz, std::vector<VmTap>* large) {
  VmTap* taps = scratch<VmTap, kTapSlot>(3 * s.n, large);
  compute_taps(s, xyz.data_ptr<float>(), taps);
  return taps;
}

}  // namespace

Tensor sample_vm_features_fwd(const Tensor& planes, const Tensor& lines, const Tensor& xyz) {
  const VmShape s = shape_of(planes, lines, xyz);
  Tensor out = at::empty({s.n, 3 * s.C}, planes.options());
  if (s.n == 0 || s.C == 0) return out;
  std::vector<VmTap> large_taps;
  const VmTap* taps = taps_of(s, xyz, &large_taps);
  const float* p = planes.data_ptr<float>();
  const float* l = lines.data_ptr<float>();
  float* o = out.data_ptr<float>();
  if (few_points(s)) {
    forward_direct(s, p, l, taps, o);
  } else {
    with_block_size(s.C, [&](auto k) { forward_padded<decltype(k)::value>(s, p, l, taps, o); });
  }
  return out;
}

std::tuple<Tensor, Tensor> sample_vm_features_bwd(const Tensor& grad_out, const Tensor& planes, const Tensor& lines,
                                                  const Tensor& xyz) {
  const VmShape s = shape_of(planes, lines, xyz);
  const bool direct = few_points(s);
  // the padded path writes every element of the gradients; the direct path scatters into zeros
  Tensor grad_planes = direct ? at::zeros_like(planes) : at::empty_like(planes);
  Tensor grad_lines = direct ? at::zeros_like(lines) : at::empty_like(lines);
  if (s.n == 0 || s.C == 0) return {grad_planes, grad_lines};
  std::vector<VmTap> large_taps;
  const VmTap* taps = taps_of(s, xyz, &large_taps);
  const float* g = grad_out.data_ptr<float>();
  const float* p = planes.data_ptr<float>();
  const float* l = lines.data_ptr<float>();
  float* gp = grad_planes.data_ptr<float>();
  float* gl = grad_lines.data_ptr<float>();
  if (direct) {
    backward_direct(s, g, p, l, taps, gp, gl);
  } else {
    with_block_size(s.C, [&](auto k) { backward_padded<decltype(k)::value>(s, g, p, l, taps, gp, gl); });
  }
  return {grad_planes, grad_lines};
}

}  // namespace cpu
}  // namespace relight3d
