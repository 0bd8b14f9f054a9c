// Occupancy-grid ops: CPU kernels.
#include "common.h"
#include "cpu_utils.h"
#include "ops.h"

#include <algorithm>
#include <vector>

namespace relight3d {
namespace cpu {


Tensor morton3d_fwd(const Tensor& coords) {
  const int64_t n = coords.size(0);
  Tensor out = at::empty({n}, coords.options());
  const int64_t* c = coords.data_ptr<int64_t>();
  int64_t* o = out.data_ptr<int64_t>();
  at::parallel_for(0, n, kGrainElementwise, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) o[i] = morton3d(c[3 * i], c[3 * i + 1], c[3 * i + 2]);
  });
  return out;
}

Tensor morton3d_invert_fwd(const Tensor& codes) {
  const int64_t n = codes.size(0);
  Tensor out = at::empty({n, 3}, codes.options());
  const int64_t* c = codes.data_ptr<int64_t>();
  int64_t* o = out.data_ptr<int64_t>();
  at::parallel_for(0, n, kGrainElementwise, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      o[3 * i] = compact_bits(c[i]);
      o[3 * i + 1] = compact_bits(c[i] >> 1);
      o[3 * i + 2] = compact_bits(c[i] >> 2);
    }
  });
  return out;
}

Tensor occupancy_cell_positions_fwd(const Tensor& indices, const Tensor& aabb, int64_t res, const OptTensor& jitter) {
  const int64_t n = indices.size(0);
  Tensor out = at::empty({n, 3}, aabb.options());
  const GridGeom g = make_grid_geom(aabb.data_ptr<float>(), 1, static_cast<int>(res));
  const int64_t* idx = indices.data_ptr<int64_t>();
  const float* jit = jitter.has_value() ? jitter->data_ptr<float>() : nullptr;
  float* o = out.data_ptr<float>();
  at::parallel_for(0, n, kGrainElementwise, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      if (jit != nullptr) {
        cell_position(g, idx[i], jit[3 * i], jit[3 * i + 1], jit[3 * i + 2], o + 3 * i);
      } else {
        cell_position(g, idx[i], 0.5f, 0.5f, 0.5f, o + 3 * i);
      }
    }
  });
  return out;
}

Tensor occupancy_grid_update_fwd(const Tensor& density_grid, const Tensor& indices, const Tensor& values,
                                 double decay) {
  Tensor out = density_grid.clone();
  const int64_t n = indices.size(0), m = density_grid.numel();
  const int64_t* idx = indices.data_ptr<int64_t>();
  const float* val = values.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const float dec = static_cast<float>(decay);
  // One pass over the indices, without atomics: the cells are split into ranges (multiples of 8 cells), and each
  // thread scans all indices but only updates cells of its own range. `touched` (one bit per cell) tells the first
  // visit of a cell, which applies the decay: out = max(grid * decay, v); later visits take out = max(out, v).
  // Cells with grid < 0 are never changed, and a visited cell with grid >= 0 stays >= 0 (or NaN), so `out < 0`
  // still identifies them on later visits.
  std::vector<uint8_t> touched((m + 7) / 8, 0);
  const int64_t n_parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), 8));
  const int64_t part = ((m + n_parts - 1) / n_parts + 7) / 8 * 8;
  at::parallel_for(0, n_parts, 1, [&](int64_t pb, int64_t pe) {
    const int64_t lo = pb * part, hi = std::min(m, pe * part);
    constexpr int64_t kAhead = 16;  // random accesses into a grid larger than the caches: prefetch ahead
    for (int64_t k = 0; k < n; ++k) {
#if defined(__GNUC__) || defined(__clang__)
      if (k + kAhead < n) {
        const int64_t ia = idx[k + kAhead];
        if (ia >= lo && ia < hi) __builtin_prefetch(o + ia, 1);
      }
#endif
      const int64_t i = idx[k];
      TORCH_CHECK(i >= 0 && i < m, "occupancy_grid_update: index ", i, " out of range [0, ", m, ")");
      if (i < lo || i >= hi) continue;
      const float g = o[i];
      if (!(g >= 0.0f)) continue;
      uint8_t& byte = touched[i >> 3];
      const uint8_t bit = static_cast<uint8_t>(1u << (i & 7));
      if (byte & bit) {
        o[i] = maximum_nan(g, val[k]);
      } else {
        byte |= bit;
        o[i] = maximum_nan(g * dec, val[k]);
      }
    }
  });
  return out;
}

Tensor pack_bitfield_fwd(const Tensor& density_grid, double threshold) {
  const int64_t nb = density_grid.numel() / 8;
  Tensor out = at::empty({nb}, density_grid.options().dtype(at::kByte));
  const float* grid = density_grid.data_ptr<float>();
  uint8_t* o = out.data_ptr<uint8_t>();
  const float thr = static_cast<float>(threshold);
  at::parallel_for(0, nb, kGrainElementwise / 8, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      uint8_t byte = 0;
      for (int bit = 0; bit < 8; ++bit) byte |= static_cast<uint8_t>(grid[8 * i + bit] > thr) << bit;
      o[i] = byte;
    }
  });
  return out;
}

Tensor unpack_bitfield_fwd(const Tensor& bitfield) {
  const int64_t nb = bitfield.size(0);
  Tensor out = at::empty({nb * 8}, bitfield.options().dtype(at::kBool));
  const uint8_t* bits = bitfield.data_ptr<uint8_t>();
  bool* o = out.data_ptr<bool>();
  at::parallel_for(0, nb, kGrainElementwise / 8, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      for (int bit = 0; bit < 8; ++bit) o[8 * i + bit] = (bits[i] >> bit) & 1;
    }
  });
  return out;
}

Tensor occupancy_lookup_fwd(const Tensor& positions, const Tensor& bitfield, const Tensor& aabb, int64_t n_cascades,
                            int64_t res) {
  const int64_t n = positions.size(0);
  Tensor out = at::empty({n}, positions.options().dtype(at::kBool));
  const GridGeom g = make_grid_geom(aabb.data_ptr<float>(), static_cast<int>(n_cascades), static_cast<int>(res));
  const float* pos = positions.data_ptr<float>();
  const uint8_t* bits = bitfield.data_ptr<uint8_t>();
  bool* o = out.data_ptr<bool>();
  at::parallel_for(0, n, kGrainElementwise / 4, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) o[i] = grid_occupied(g, bits, pos[3 * i], pos[3 * i + 1], pos[3 * i + 2]);
  });
  return out;
}

}  // namespace cpu
}  // namespace relight3d
