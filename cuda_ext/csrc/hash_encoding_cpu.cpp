// Multiresolution hash encoding: CPU kernels (see hash_encoding.h for what is computed).
//
// Gathers (the features, the gradient w.r.t. the positions, and in the double backward the gradient w.r.t. the
// incoming gradient and the second derivative w.r.t. the positions) run in parallel over blocks of points, level by
// level within a block (see for_each_level_and_batch); each point writes only its own row.
//
// Scatters into the table (its gradient, and the double backward's) would race between points, so the work is split
// by gradient memory instead, without atomics: one task per (set of levels, group of points) adds into rows that it
// alone writes. With at least as many levels as threads there is one group, and each task accumulates straight into
// its levels' rows of the gradient, over all points in order (deterministic for any number of threads, and no
// memory beyond the gradient); the levels are dealt to the sets in turn (set s takes levels s, s + sets, ...), so
// that each set gets its share of the cheap coarse levels, whose rows stay in cache, and of the costly fine ones.
// With more threads than levels each level is a set and the points are split into groups; the tasks of the first
// group write into the gradient, the others into zeroed buffers of one level's rows (at most levels * (groups - 1)
// of them, each no larger than a level), summed into the gradient at the end.
//
// Both visit points in batches of kLanes: the cells of a batch at one level (corner rows, weights) are computed in
// loops over its points that the compiler vectorises (cell_batch), then the rows are read or written point by point.
// Before that, the batch's 8 * kLanes rows are prefetched (prefetch_rows): on the fine, hashed levels they are
// random rows of tables larger than the L2 cache, and asking for them all at once overlaps the misses that the
// point-by-point loop would otherwise wait for a few at a time. (Measured on one thread, the NGP field's 12 levels
// and 9 MB table, 2^18 points along rays, on a shared 2-core machine: the prefetch took the forward from ~190-240 ms
// to ~140-200 ms and the table gradient from ~210-250 to ~150-215 ms; vectorising cell_batch's first loop, and
// dropping the file-wide `#pragma GCC optimize` that had kept hash_encoding.h's functions from being inlined, took
// the forward of the 2-thread benchmark from ~107 to ~86 ms and the position gradient from ~260-320 to ~200 ms.)
//
// Feature counts 1, 2, 4 and 8 are compiled with the count known (inner loops unrolled); others run a generic loop.
#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <vector>

#include "hash_encoding.h"
#include "parallel.h"

namespace relight3d {
namespace cpu {

using at::Tensor;

namespace {

constexpr int kLanes = 64;                     // points of a batch (cell_batch)
constexpr int64_t kPointGrain = 512;           // fewest points per thread of the gathers
constexpr int64_t kBlock = 16384;              // points per block, visited level by level
constexpr int64_t kMinPointsPerGroup = 16384;  // below this, a level's scatter is not split further
constexpr int32_t kOneBits = 0x3f800000;       // the bits of 1.0f
constexpr int32_t kInfBits = 0x7f800000;       // the bits of +inf (above it, with the sign cleared: NaN)

int64_t level_rows(const HashLevels& lv, int l) { return lv.offset[l + 1] - lv.offset[l]; }

// The cells of a batch of points at one level (hash_cell of hash_encoding.h for each), as arrays over the points:
// rows[c][j] (from the level's first row), weights w[c][j], fractional positions frac[d][j], clamp masks mask[d][j]
// (1 where 0 < x_d < 1); valid[j] false for a point with a NaN coordinate, whose rows are in range but
// meaningless (its features are NaN, its gradients skipped).
struct CellBatch {
  uint32_t rows[8][kLanes];
  float w[8][kLanes];
  float frac[3][kLanes];
  float mask[3][kLanes];
  bool valid[kLanes];
};

// The cells of points [i0, i0 + m), m <= kLanes, at level l.
void cell_batch(const float* x, const HashLevels& lv, int l, int64_t i0, int m, CellBatch* cb) {
  const float scale = lv.scale[l];
  const uint32_t res = lv.res[l];
  const uint32_t stride[3] = {1u, res, res * res};
  uint32_t term[3][2][kLanes];  // per axis, the coordinate term of the lower / upper corner
  float v[3][kLanes];           // the points' coordinates, axis by axis (so that the loops below vectorise)
  for (int j = 0; j < m; ++j) {
    for (int d = 0; d < 3; ++d) v[d][j] = x[3 * (i0 + j) + d];
  }
  uint32_t nan[kLanes];
  for (int j = 0; j < m; ++j) nan[j] = 0;
  for (int d = 0; d < 3; ++d) {
    uint32_t lo[kLanes];
    float* frac = cb->frac[d];
    float* inside = cb->mask[d];
    for (int j = 0; j < m; ++j) {
      // The clamp to [0, 1], its gradient's mask and the NaN test on the float's bits: integer compares vectorise
      // (float ones, which may trap, are not if-converted). Non-negative floats order as their bits; negative ones,
      // -0 and negative NaNs included, have the sign bit set. NaNs end up in range (their point is marked invalid).
      const int32_t bits = std::bit_cast<int32_t>(v[d][j]);
      nan[j] |= static_cast<uint32_t>((bits & 0x7fffffff) > kInfBits);
      const float xc = std::bit_cast<float>(std::min(std::max(bits, 0), kOneBits));
      inside[j] = static_cast<float>((bits > 0) & (bits < kOneBits));
      const float pos = grid_position(xc, scale);
      const int32_t cell = static_cast<int32_t>(pos);  // pos >= 0.5: truncation is floor
      frac[j] = pos - static_cast<float>(cell);
      lo[j] = static_cast<uint32_t>(cell);
    }
    uint32_t* t0 = term[d][0];
    uint32_t* t1 = term[d][1];
    if (lv.dense[l]) {
      const uint32_t top = res - 1, sd = stride[d];
      for (int j = 0; j < m; ++j) {
        t0[j] = (lo[j] < top ? lo[j] : top) * sd;
        t1[j] = (lo[j] + 1 < top ? lo[j] + 1 : top) * sd;
      }
    } else {
      const uint32_t prime = hash_prime(d);
      for (int j = 0; j < m; ++j) {
        t0[j] = lo[j] * prime;
        t1[j] = (lo[j] + 1) * prime;
      }
    }
  }
  for (int j = 0; j < m; ++j) cb->valid[j] = nan[j] == 0;
  const uint32_t mask_rows = lv.mask[l];
  for (int c = 0; c < 8; ++c) {
    const uint32_t* a = term[0][c & 1];
    const uint32_t* b = term[1][(c >> 1) & 1];
    const uint32_t* e = term[2][c >> 2];
    uint32_t* rows = cb->rows[c];
    if (lv.dense[l]) {
      for (int j = 0; j < m; ++j) rows[j] = a[j] + b[j] + e[j];
    } else {
      for (int j = 0; j < m; ++j) rows[j] = (a[j] ^ b[j] ^ e[j]) & mask_rows;
    }
    const bool b0 = c & 1, b1 = (c >> 1) & 1, b2 = c >> 2;
    const float *f0 = cb->frac[0], *f1 = cb->frac[1], *f2 = cb->frac[2];
    float* w = cb->w[c];
    for (int j = 0; j < m; ++j) {  // corner_weights' products, in its order
      const float a0 = b0 ? f0[j] : 1.0f - f0[j];
      const float a1 = b1 ? f1[j] : 1.0f - f1[j];
      const float a2 = b2 ? f2[j] : 1.0f - f2[j];
      w[j] = a0 * a1 * a2;
    }
  }
}

// Asks for the rows of the batch's corners (rows: the level's first row of the table, or of its gradient when
// kWrite) to be brought into cache; the first cache line of each row (F <= 16 fits in one).
template <bool kWrite>
void prefetch_rows(const CellBatch& cb, int m, const float* rows, int64_t nf) {
#if defined(__GNUC__)
  for (int c = 0; c < 8; ++c) {
    for (int j = 0; j < m; ++j) __builtin_prefetch(rows + static_cast<int64_t>(cb.rows[c][j]) * nf, kWrite, 3);
  }
#endif
}

// The batch's point j as a HashCell (for the functions of hash_encoding.h).
HashCell cell_of(const CellBatch& cb, int j) {
  HashCell cell;
  for (int c = 0; c < 8; ++c) cell.row[c] = cb.rows[c][j];
  for (int d = 0; d < 3; ++d) cell.frac[d] = cb.frac[d][j];
  return cell;
}

// body(l, cells, i0, m) for every level l and batch [i0, i0 + m) of points, with the batch's cells at that level and
// their rows of table (nf floats each) prefetched, in parallel over blocks of points, level by level within a block:
// the accesses of a level's sweep stay within its rows (at most a few MB, mostly in cache; all levels' rows point
// by point would not be). Each call writes only the rows of its points.
template <typename Body>
void for_each_level_and_batch(const float* x, const float* table, const HashLevels& lv, int64_t n, int64_t nf,
                              const Body& body) {
  at::parallel_for(0, n, kPointGrain, [&](int64_t begin, int64_t end) {
    CellBatch cb;
    for (int64_t b0 = begin; b0 < end; b0 += kBlock) {
      const int64_t b1 = std::min(end, b0 + kBlock);
      for (int l = 0; l < lv.n_levels; ++l) {
        for (int64_t i0 = b0; i0 < b1; i0 += kLanes) {
          const int m = static_cast<int>(std::min<int64_t>(kLanes, b1 - i0));
          cell_batch(x, lv, l, i0, m, &cb);
          prefetch_rows<false>(cb, m, table + lv.offset[l] * nf, nf);
          body(l, cb, i0, m);
        }
      }
    }
  });
}

// body(l, cells, i0, m, rows) for every level l and batch [i0, i0 + m) of points, where rows (level l's rows of the
// gradient, nf floats each, prefetched for the batch's corners) is written by this task alone: see the file comment.
// Each task takes a set of levels and a group of points, and visits its points in blocks, its levels within a block,
// so that it reads the rows of grad_out once (level by level over all points would read all of grad_out once per
// level). grad_table must be zeroed.
template <typename Body>
void scatter_by_level(const float* x, const HashLevels& lv, int64_t n, int64_t nf, float* grad_table,
                      const Body& body) {
  const int64_t levels = lv.n_levels;
  const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  const int64_t sets = std::min(levels, threads);
  const int64_t groups =
      std::max<int64_t>(1, std::min<int64_t>((threads + levels - 1) / levels, n / kMinPointsPerGroup));
  const int64_t per_group = (n + groups - 1) / groups;
  std::vector<std::vector<float>> buffers(levels * (groups - 1));
  at::parallel_for(0, sets * groups, 1, [&](int64_t task_begin, int64_t task_end) {
    CellBatch cb;
    for (int64_t task = task_begin; task < task_end; ++task) {
      const int64_t set = task / groups, group = task % groups;
      float* rows[kMaxHashLevels];
      for (int l = static_cast<int>(set); l < levels; l += static_cast<int>(sets)) {
        rows[l] = grad_table + lv.offset[l] * nf;
        if (group > 0) {
          std::vector<float>& buffer = buffers[l * (groups - 1) + group - 1];
          buffer.assign(level_rows(lv, l) * nf, 0.0f);
          rows[l] = buffer.data();
        }
      }
      const int64_t begin = group * per_group, end = std::min(n, (group + 1) * per_group);
      for (int64_t b0 = begin; b0 < end; b0 += kBlock) {
        const int64_t b1 = std::min(end, b0 + kBlock);
        for (int l = static_cast<int>(set); l < levels; l += static_cast<int>(sets)) {
          for (int64_t i0 = b0; i0 < b1; i0 += kLanes) {
            const int m = static_cast<int>(std::min<int64_t>(kLanes, b1 - i0));
            cell_batch(x, lv, l, i0, m, &cb);
            prefetch_rows<true>(cb, m, rows[l], nf);
            body(l, cb, i0, m, rows[l]);
          }
        }
      }
    }
  });
  if (groups == 1) return;
  for (int l = 0; l < levels; ++l) {
    float* rows = grad_table + lv.offset[l] * nf;
    at::parallel_for(0, level_rows(lv, l) * nf, kGrainElementwise, [&](int64_t begin, int64_t end) {
      for (int64_t g = 1; g < groups; ++g) {
        const float* buffer = buffers[l * (groups - 1) + g - 1].data();
        for (int64_t j = begin; j < end; ++j) rows[j] += buffer[j];
      }
    });
  }
}

template <int kF>
void forward(const float* x, const float* table, const HashLevels& lv, int64_t n, int nf, float* out) {
  const int F = kF > 0 ? kF : nf;
  const int64_t cols = static_cast<int64_t>(lv.n_levels) * F;
  for_each_level_and_batch(x, table, lv, n, F, [&](int l, const CellBatch& cb, int64_t i0, int m) {
    const float* rows = table + lv.offset[l] * F;
    for (int j = 0; j < m; ++j) {
      float* o = out + (i0 + j) * cols + l * F;
      for (int k = 0; k < F; ++k) {  // encode_level's sums, in its order
        float s = 0.0f;
        for (int c = 0; c < 8; ++c) s += rows[static_cast<int64_t>(cb.rows[c][j]) * F + k] * cb.w[c][j];
        o[k] = cb.valid[j] ? s : std::numeric_limits<float>::quiet_NaN();
      }
    }
  });
}

// grad_table[row_c] += w_c g[l] for every point and level (grad_table zeroed).
template <int kF>
void table_gradient(const float* g, const float* x, const HashLevels& lv, int64_t n, int nf, float* grad_table) {
  const int F = kF > 0 ? kF : nf;
  const int64_t cols = static_cast<int64_t>(lv.n_levels) * F;
  scatter_by_level(x, lv, n, F, grad_table, [&](int l, const CellBatch& cb, int64_t i0, int m, float* rows) {
    for (int j = 0; j < m; ++j) {
      const float* gi = g + (i0 + j) * cols + l * F;
      bool zero = true;
      for (int k = 0; k < F; ++k) zero = zero && gi[k] == 0.0f;
      if (zero || !cb.valid[j]) continue;
      for (int c = 0; c < 8; ++c) {
        float* r = rows + static_cast<int64_t>(cb.rows[c][j]) * F;
        const float w = cb.w[c][j];
        for (int k = 0; k < F; ++k) r[k] += w * gi[k];
      }
    }
  });
}

// grad_x[i] = m * sum_l scale_l sum_c (g[l] . table[row_c]) dw_c/dfrac (grad_x zeroed).
template <int kF>
void position_gradient(const float* g, const float* x, const float* table, const HashLevels& lv, int64_t n, int nf,
                       float* grad_x) {
  const int F = kF > 0 ? kF : nf;
  const int64_t cols = static_cast<int64_t>(lv.n_levels) * F;
  for_each_level_and_batch(x, table, lv, n, F, [&](int l, const CellBatch& cb, int64_t i0, int m) {
    const float* rows = table + lv.offset[l] * F;
    for (int j = 0; j < m; ++j) {
      if (!cb.valid[j]) continue;
      const HashCell cell = cell_of(cb, j);
      float dot[8], acc[3] = {0.0f, 0.0f, 0.0f};
      corner_dots<kF>(rows, cell, g + (i0 + j) * cols + l * F, nf, dot);
      add_position_gradient(dot, cell.frac, lv.scale[l], acc);
      for (int d = 0; d < 3; ++d) grad_x[3 * (i0 + j) + d] += acc[d] * cb.mask[d][j];
    }
  });
}

// u_d = v_d m_d scale: the cotangent of grad_x in the level's fractional coordinates; false when it is 0.
bool level_direction(const float* v, const CellBatch& cb, int j, float scale, float* u) {
  for (int d = 0; d < 3; ++d) u[d] = v[d] * cb.mask[d][j] * scale;
  return u[0] != 0.0f || u[1] != 0.0f || u[2] != 0.0f;
}

// Double backward, the gathers: dg[i, l] = sum_c b_c table[row_c] and dx[i] (see hash_encoding.h); dg / dx null when
// not asked for (dg and dx zeroed).
template <int kF>
void double_backward_gathers(const float* v, const float* g, const float* x, const float* table, const HashLevels& lv,
                             int64_t n, int nf, float* dg, float* dx) {
  const int F = kF > 0 ? kF : nf;
  const int64_t cols = static_cast<int64_t>(lv.n_levels) * F;
  for_each_level_and_batch(x, table, lv, n, F, [&](int l, const CellBatch& cb, int64_t i0, int m) {
    const float* rows = table + lv.offset[l] * F;
    for (int j = 0; j < m; ++j) {
      const int64_t i = i0 + j;
      float u[3];
      if (!cb.valid[j] || !level_direction(v + 3 * i, cb, j, lv.scale[l], u)) continue;
      const HashCell cell = cell_of(cb, j);
      if (dg != nullptr) {
        float b[8];
        directional_weights(cell.frac, u, b);
        float* dgl = dg + i * cols + l * F;
        for (int k = 0; k < F; ++k) {
          float s = 0.0f;
          for (int c = 0; c < 8; ++c) s += rows[static_cast<int64_t>(cell.row[c]) * F + k] * b[c];
          dgl[k] = s;
        }
      }
      if (dx != nullptr) {
        float dot[8], acc[3] = {0.0f, 0.0f, 0.0f};
        corner_dots<kF>(rows, cell, g + i * cols + l * F, nf, dot);
        add_position_second_derivative(dot, cell.frac, u, lv.scale[l], acc);
        for (int d = 0; d < 3; ++d) dx[3 * i + d] += acc[d] * cb.mask[d][j];
      }
    }
  });
}

// Double backward, the scatter: dtable[row_c] += b_c g[i, l] (dtable zeroed).
template <int kF>
void double_backward_table(const float* v, const float* g, const float* x, const HashLevels& lv, int64_t n, int nf,
                           float* dtable) {
  const int F = kF > 0 ? kF : nf;
  const int64_t cols = static_cast<int64_t>(lv.n_levels) * F;
  scatter_by_level(x, lv, n, F, dtable, [&](int l, const CellBatch& cb, int64_t i0, int m, float* rows) {
    for (int j = 0; j < m; ++j) {
      const int64_t i = i0 + j;
      float u[3], b[8];
      if (!cb.valid[j] || !level_direction(v + 3 * i, cb, j, lv.scale[l], u)) continue;
      directional_weights(cell_of(cb, j).frac, u, b);
      const float* gi = g + i * cols + l * F;
      for (int c = 0; c < 8; ++c) {
        float* r = rows + static_cast<int64_t>(cb.rows[c][j]) * F;
        for (int k = 0; k < F; ++k) r[k] += b[c] * gi[k];
      }
    }
  });
}

}  // namespace

Tensor hash_encoding_fwd(const Tensor& positions, const Tensor& table, const HashLevels& levels) {
  const int64_t n = positions.size(0), nf = table.size(1);
  Tensor out = at::empty({n, levels.n_levels * nf}, table.options());
  if (n == 0 || nf == 0) return out;
  with_features(nf, [&](auto f) {
    forward<decltype(f)::value>(positions.data_ptr<float>(), table.data_ptr<float>(), levels, n,
                                static_cast<int>(nf), out.data_ptr<float>());
  });
  return out;
}

std::tuple<Tensor, Tensor> hash_encoding_bwd(const Tensor& grad_out, const Tensor& positions, const Tensor& table,
                                             const HashLevels& levels, bool need_table, bool need_positions) {
  const int64_t n = positions.size(0), nf = table.size(1);
  Tensor grad_table = need_table ? at::zeros_like(table) : Tensor();
  Tensor grad_positions = need_positions ? at::zeros_like(positions) : Tensor();
  if (n == 0 || nf == 0) return {grad_table, grad_positions};
  const float* g = grad_out.data_ptr<float>();
  const float* x = positions.data_ptr<float>();
  with_features(nf, [&](auto f) {
    constexpr int kF = decltype(f)::value;
    if (need_table) table_gradient<kF>(g, x, levels, n, static_cast<int>(nf), grad_table.data_ptr<float>());
    if (need_positions) {
      position_gradient<kF>(g, x, table.data_ptr<float>(), levels, n, static_cast<int>(nf),
                            grad_positions.data_ptr<float>());
    }
  });
  return {grad_table, grad_positions};
}

std::tuple<Tensor, Tensor, Tensor> hash_encoding_bwd_bwd(const Tensor& grad_grad_positions, const Tensor& grad_out,
                                                         const Tensor& positions, const Tensor& table,
                                                         const HashLevels& levels, bool need_grad_out,
                                                         bool need_table, bool need_positions) {
  const int64_t n = positions.size(0), nf = table.size(1);
  Tensor dg = need_grad_out ? at::zeros_like(grad_out) : Tensor();
  Tensor dtable = need_table ? at::zeros_like(table) : Tensor();
  Tensor dx = need_positions ? at::zeros_like(positions) : Tensor();
  if (n == 0 || nf == 0) return {dg, dtable, dx};
  const float* v = grad_grad_positions.data_ptr<float>();
  const float* g = grad_out.data_ptr<float>();
  const float* x = positions.data_ptr<float>();
  with_features(nf, [&](auto f) {
    constexpr int kF = decltype(f)::value;
    if (need_grad_out || need_positions) {
      double_backward_gathers<kF>(v, g, x, table.data_ptr<float>(), levels, n, static_cast<int>(nf),
                                  need_grad_out ? dg.data_ptr<float>() : nullptr,
                                  need_positions ? dx.data_ptr<float>() : nullptr);
    }
    if (need_table) double_backward_table<kF>(v, g, x, levels, n, static_cast<int>(nf), dtable.data_ptr<float>());
  });
  return {dg, dtable, dx};
}

}  // namespace cpu
}  // namespace relight3d
