// occupancy_grid_update: the CPU algorithm (one pass over the indices without atomics; see below). The CUDA one is in
// occupancy_cuda.cu.
#include "common.h"
#include "ops.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace relight3d {
namespace cpu {

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

}  // namespace cpu
}  // namespace relight3d
