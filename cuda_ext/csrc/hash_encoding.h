// Multiresolution hash encoding (Instant-NGP): the per-(point, level) arithmetic shared by the CPU kernels
// (hash_encoding_cpu.cpp) and the CUDA kernels (hash_encoding_cuda.cu), and their declarations. The reference, which
// defines what is computed, is relight3d/ops/_torch_hash.py:
//
//   x = clamp(positions[i], 0, 1); at level l: pos = x * scale[l] + 0.5, cell = floor(pos), frac = pos - cell;
//   corner c (bit d of c adds 1 to axis d) is table row offset[l] + index(cell + bits(c)), with index
//   x + res * (y + res * z) (coordinates clamped to res - 1) on dense levels and
//   (x * 1 ^ y * 2654435761 ^ z * 805459861) mod size on hashed ones (size a power of two: 32-bit arithmetic);
//   out[i, l * F + k] = sum_c w_c table[row_c, k] with w_c = prod_d (bit d of c ? frac_d : 1 - frac_d).
//
// Derivatives, with a_d(c) = (bit d of c ? frac_d : 1 - frac_d) and s_d(c) = (bit d of c ? 1 : -1):
//   dw_c / dfrac_d = s_d(c) * prod_{e != d} a_e(c),
//   d2w_c / dfrac_d dfrac_e = s_d(c) s_e(c) a_k(c) (k the third axis),
//   d2w_c / dfrac_d^2 = 0, and dfrac_d / dx_d = m_d scale[l] with m_d = 1 strictly inside the box (0 < x_d < 1, as
//   torch.clamp(x, 0, 1)'s gradient), else 0.
//
// The backward gives, for the cotangent g of the output,
//   grad_table[row_c, k] += w_c g[l, k],
//   grad_x[d] = m_d sum_l scale[l] sum_c (sum_k g[l, k] table[row_c, k]) dw_c/dfrac_d.
// The double backward (for a loss on grad_x, as autograd normals trained with create_graph=True make) takes the
// cotangent v of grad_x; with u_d = v_d m_d scale[l] and the directional weights b_c = sum_d u_d dw_c/dfrac_d:
//   d/dg:     dg[l, k] = sum_c b_c table[row_c, k]
//   d/dtable: dtable[row_c, k] += b_c g[l, k]
//   d/dx:     dx[e] = m_e sum_l scale[l] sum_c (sum_k g[l, k] table[row_c, k]) sum_{d != e} u_d d2w_c/dfrac_d dfrac_e
// (the cotangent of grad_table contributes a forward pass and a position gradient with it as the table: the Python
// wrapper composes those from hash_encoding_fwd and hash_encoding_bwd).
//
// Points with a NaN coordinate get NaN features and contribute no gradient.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <tuple>
#include <type_traits>

#include "common.h"

#if defined(__CUDACC__)
#include <cuda_runtime.h>
#endif

namespace relight3d {

constexpr int kMaxHashLevels = 32;  // relight3d.ops.hash_encoding.MAX_LEVELS

// The levels of a grid (HashGridLayout), as one small struct that CUDA kernels take by value.
struct HashLevels {
  int n_levels;
  float scale[kMaxHashLevels];
  int64_t offset[kMaxHashLevels + 1];  // first table row of each level, then the number of rows
  uint32_t res[kMaxHashLevels];    // dense levels: nodes per axis
  uint32_t mask[kMaxHashLevels];   // hashed levels: rows - 1 (rows a power of two)
  bool dense[kMaxHashLevels];
};

// The 8 corners of a point's cell at one level: table rows (from the level's first row) and the fractional position.
struct HashCell {
  uint32_t row[8];
  float frac[3];
};

// The spatial hash's multiplier of axis d (tinycudann's primes; relight3d.ops._torch_hash.PRIMES).
R3D_HD uint32_t hash_prime(int d) { return d == 0 ? 1u : (d == 1 ? 2654435761u : 805459861u); }

// x * scale + 0.5 rounded twice, as torch computes it (no fused multiply-add: nvcc would contract it; host compilers
// do not without FMA in the target, which setup.py does not enable).
R3D_HD float grid_position(float x, float scale) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(__fmul_rn(x, scale), 0.5f);
#else
  return x * scale + 0.5f;
#endif
}

// The cell of a clamped, non-NaN point at level l.
R3D_HD void hash_cell(const HashLevels& lv, int l, const float* xc, HashCell* cell) {
  uint32_t term[3][2];
  const uint32_t res = lv.res[l];
  const uint32_t stride[3] = {1u, res, res * res};
  for (int d = 0; d < 3; ++d) {
    const float pos = grid_position(xc[d], lv.scale[l]);  // in [0.5, scale + 0.5]: truncation is floor
    const uint32_t lo = static_cast<uint32_t>(pos);
    cell->frac[d] = pos - static_cast<float>(lo);
    if (lv.dense[l]) {
      term[d][0] = (lo < res - 1 ? lo : res - 1) * stride[d];
      term[d][1] = (lo + 1 < res - 1 ? lo + 1 : res - 1) * stride[d];
    } else {
      term[d][0] = lo * hash_prime(d);
      term[d][1] = (lo + 1) * hash_prime(d);
    }
  }
  for (int c = 0; c < 8; ++c) {
    const uint32_t t0 = term[0][c & 1], t1 = term[1][(c >> 1) & 1], t2 = term[2][(c >> 2) & 1];
    cell->row[c] = lv.dense[l] ? t0 + t1 + t2 : (t0 ^ t1 ^ t2) & lv.mask[l];
  }
}

// a_d(c) for the three axes of corner c.
R3D_HD void corner_factors(const float* frac, int c, float* a) {
  for (int d = 0; d < 3; ++d) a[d] = (c >> d) & 1 ? frac[d] : 1.0f - frac[d];
}

// w_c, in the reference's order ((a_0 a_1) a_2).
R3D_HD void corner_weights(const float* frac, float* w) {
  const float a0[2] = {1.0f - frac[0], frac[0]}, a1[2] = {1.0f - frac[1], frac[1]};
  const float a2[2] = {1.0f - frac[2], frac[2]};
  for (int c = 0; c < 8; ++c) w[c] = a0[c & 1] * a1[(c >> 1) & 1] * a2[c >> 2];
}

// dw_c / dfrac_d for every corner c and axis d.
R3D_HD void corner_weight_gradients(const float* frac, float (*dw)[3]) {
  for (int c = 0; c < 8; ++c) {
    float a[3];
    corner_factors(frac, c, a);
    for (int d = 0; d < 3; ++d) {
      const float others = a[(d + 1) % 3] * a[(d + 2) % 3];
      dw[c][d] = (c >> d) & 1 ? others : -others;
    }
  }
}

// Clamps point i to [0, 1]^3 into xc and sets mask[d] (1 where 0 < x_d < 1, torch.clamp(x, 0, 1)'s gradient, else
// 0); false for a point with a NaN coordinate.
R3D_HD bool clamp_point(const float* x, float* xc, float* mask) {
  for (int d = 0; d < 3; ++d) {
    if (x[d] != x[d]) return false;
    xc[d] = clampf(x[d], 0.0f, 1.0f);
    mask[d] = x[d] > 0.0f && x[d] < 1.0f ? 1.0f : 0.0f;
  }
  return true;
}

// sum_k g[k] table[row_c, k] for the 8 corners.
template <int kF>
R3D_HD void corner_dots(const float* rows, const HashCell& cell, const float* g, int nf, float* dot) {
  const int F = kF > 0 ? kF : nf;
  for (int c = 0; c < 8; ++c) {
    const float* t = rows + static_cast<int64_t>(cell.row[c]) * F;
    float s = 0.0f;
    for (int k = 0; k < F; ++k) s += g[k] * t[k];
    dot[c] = s;
  }
}

// Forward of one (point, level): out[k] = sum_c w_c rows[row_c, k] (rows: the level's first row).
template <int kF>
R3D_HD void encode_level(const float* rows, const HashCell& cell, int nf, float* out) {
  const int F = kF > 0 ? kF : nf;
  float w[8];
  corner_weights(cell.frac, w);
  for (int k = 0; k < F; ++k) {
    float s = 0.0f;
    for (int c = 0; c < 8; ++c) s += rows[static_cast<int64_t>(cell.row[c]) * F + k] * w[c];
    out[k] = s;
  }
}

// The level's term of grad_x (before the clamp mask): scale * sum_c dot_c dw_c/dfrac_d, added to gx.
R3D_HD void add_position_gradient(const float* dot, const float* frac, float scale, float* gx) {
  float dw[8][3];
  corner_weight_gradients(frac, dw);
  for (int d = 0; d < 3; ++d) {
    float s = 0.0f;
    for (int c = 0; c < 8; ++c) s += dot[c] * dw[c][d];
    gx[d] += scale * s;
  }
}

// The directional weights b_c = sum_d u_d dw_c/dfrac_d of the double backward.
R3D_HD void directional_weights(const float* frac, const float* u, float* b) {
  float dw[8][3];
  corner_weight_gradients(frac, dw);
  for (int c = 0; c < 8; ++c) b[c] = u[0] * dw[c][0] + u[1] * dw[c][1] + u[2] * dw[c][2];
}

// The level's term of dx (before the clamp mask): scale * sum_c dot_c sum_{d != e} u_d d2w_c/dfrac_d dfrac_e.
R3D_HD void add_position_second_derivative(const float* dot, const float* frac, const float* u, float scale,
                                           float* dx) {
  for (int c = 0; c < 8; ++c) {
    float a[3];
    corner_factors(frac, c, a);
    for (int e = 0; e < 3; ++e) {
      const int d1 = (e + 1) % 3, d2 = (e + 2) % 3;
      // d2w/dfrac_d1 dfrac_e = s_d1 s_e a_d2, and the same with d1, d2 swapped
      const float s_e = (c >> e) & 1 ? 1.0f : -1.0f;
      const float s1 = (c >> d1) & 1 ? 1.0f : -1.0f, s2 = (c >> d2) & 1 ? 1.0f : -1.0f;
      dx[e] += scale * dot[c] * s_e * (u[d1] * s1 * a[d2] + u[d2] * s2 * a[d1]);
    }
  }
}

// fn(std::integral_constant<int, F>) with F the feature count if it is 1, 2, 4 or 8 (compiled with the count known:
// inner loops unrolled), else 0 (the count known at run time).
template <typename Fn>
void with_features(int64_t nf, const Fn& fn) {
  switch (nf) {
    case 1: return fn(std::integral_constant<int, 1>{});
    case 2: return fn(std::integral_constant<int, 2>{});
    case 4: return fn(std::integral_constant<int, 4>{});
    case 8: return fn(std::integral_constant<int, 8>{});
    default: return fn(std::integral_constant<int, 0>{});
  }
}

// Device-specific implementations (hash_encoding_cpu.cpp, hash_encoding_cuda.cu), called by the checked entry
// points of hash_encoding.cpp. grad_table / grad_x (bwd) and dg / dtable / dx (bwd_bwd) are undefined tensors when
// not asked for.
#define R3D_HASH_ENCODING_OPS                                                                                       \
  at::Tensor hash_encoding_fwd(const at::Tensor& positions, const at::Tensor& table, const HashLevels& levels);     \
  std::tuple<at::Tensor, at::Tensor> hash_encoding_bwd(const at::Tensor& grad_out, const at::Tensor& positions,     \
                                                       const at::Tensor& table, const HashLevels& levels,           \
                                                       bool need_table, bool need_positions);                       \
  std::tuple<at::Tensor, at::Tensor, at::Tensor> hash_encoding_bwd_bwd(                                              \
      const at::Tensor& grad_grad_positions, const at::Tensor& grad_out, const at::Tensor& positions,              \
      const at::Tensor& table, const HashLevels& levels, bool need_grad_out, bool need_table, bool need_positions);

namespace cpu {
R3D_HASH_ENCODING_OPS
}  // namespace cpu

#ifdef WITH_CUDA
namespace cuda {
R3D_HASH_ENCODING_OPS
}  // namespace cuda
#endif

}  // namespace relight3d
