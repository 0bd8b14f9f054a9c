// Multiresolution hash encoding (see hash_encoding.h): checks of the tensors and of the layout, then dispatch.
#include "hash_encoding.h"

#include "checks.h"
#include "ops.h"

namespace relight3d {

namespace {

// The layout (relight3d.ops.HashGridLayout, checked the same way by relight3d.ops.hash_encoding.check_layout) as the
// kernels take it; raises unless it fills a table of n_rows rows.
HashLevels make_levels(const char* op, const std::vector<double>& scales, const std::vector<int64_t>& resolutions,
                       const std::vector<int64_t>& offsets, const std::vector<bool>& dense, int64_t n_rows) {
  const int64_t n = static_cast<int64_t>(scales.size());
  TORCH_CHECK(n >= 1 && n <= kMaxHashLevels, op, ": need 1 to ", kMaxHashLevels, " levels, got ", n);
  TORCH_CHECK(static_cast<int64_t>(resolutions.size()) == n && static_cast<int64_t>(dense.size()) == n &&
                  static_cast<int64_t>(offsets.size()) == n + 1,
              op, ": one scale, resolution and dense flag per level and levels + 1 offsets");
  TORCH_CHECK(offsets[0] == 0 && offsets[n] == n_rows, op, ": the offsets must run from 0 to the table's ", n_rows,
              " rows, got ", offsets[0], " to ", offsets[n]);
  HashLevels lv{};
  lv.n_levels = static_cast<int>(n);
  for (int64_t l = 0; l < n; ++l) {
    const int64_t size = offsets[l + 1] - offsets[l], res = resolutions[l];
    TORCH_CHECK(scales[l] > 0.0 && scales[l] < 16777216.0 && res >= 1, op, ": level ", l,
                " needs 0 < scale < 2^24 and a positive resolution, got ", scales[l], " and ", res);
    if (dense[l]) {
      TORCH_CHECK(res <= 1625 && size == res * res * res, op, ": dense level ", l, " needs ", res,
                  "^3 rows (fewer than 2^32), got ", size);  // 1625^3 < 2^32 < 1626^3
    } else {
      TORCH_CHECK(size > 0 && (size & (size - 1)) == 0 && size <= (int64_t{1} << 32), op, ": hashed level ", l,
                  " needs a power of two (at most 2^32) of rows, got ", size);
    }
    lv.scale[l] = static_cast<float>(scales[l]);
    lv.offset[l] = offsets[l];
    lv.res[l] = static_cast<uint32_t>(res);
    lv.mask[l] = static_cast<uint32_t>(size - 1);
    lv.dense[l] = dense[l];
  }
  lv.offset[n] = offsets[n];
  return lv;
}

void check_inputs(const char* op, const Tensor& positions, const Tensor& table) {
  R3D_CHECK(op, positions.device(), at::kFloat, (positions), -1, 3);
  R3D_CHECK(op, positions.device(), at::kFloat, (table), -1, -1);
}

}  // namespace

Tensor hash_encoding_fwd(const Tensor& positions, const Tensor& table, const std::vector<double>& scales,
                         const std::vector<int64_t>& resolutions, const std::vector<int64_t>& offsets,
                         const std::vector<bool>& dense) {
  const char* op = "hash_encoding";
  check_inputs(op, positions, table);
  const HashLevels lv = make_levels(op, scales, resolutions, offsets, dense, table.size(0));
  R3D_DISPATCH(positions.device(), hash_encoding_fwd, positions, table, lv);
}

std::tuple<OptTensor, OptTensor> hash_encoding_bwd(const Tensor& grad_out, const Tensor& positions,
                                                   const Tensor& table, const std::vector<double>& scales,
                                                   const std::vector<int64_t>& resolutions,
                                                   const std::vector<int64_t>& offsets, const std::vector<bool>& dense,
                                                   bool need_table, bool need_positions) {
  const char* op = "hash_encoding_bwd";
  check_inputs(op, positions, table);
  const HashLevels lv = make_levels(op, scales, resolutions, offsets, dense, table.size(0));
  R3D_CHECK(op, positions.device(), at::kFloat, (grad_out), positions.size(0), lv.n_levels * table.size(1));
  const auto run = [&]() {
    R3D_DISPATCH(positions.device(), hash_encoding_bwd, grad_out, positions, table, lv, need_table, need_positions);
  };
  const auto [grad_table, grad_positions] = run();
  return {need_table ? OptTensor(grad_table) : std::nullopt, need_positions ? OptTensor(grad_positions) : std::nullopt};
}

std::tuple<OptTensor, OptTensor, OptTensor> hash_encoding_bwd_bwd(
    const Tensor& grad_grad_positions, const Tensor& grad_out, const Tensor& positions, const Tensor& table,
    const std::vector<double>& scales, const std::vector<int64_t>& resolutions, const std::vector<int64_t>& offsets,
    const std::vector<bool>& dense, bool need_grad_out, bool need_table, bool need_positions) {
  const char* op = "hash_encoding_bwd_bwd";
  check_inputs(op, positions, table);
  const HashLevels lv = make_levels(op, scales, resolutions, offsets, dense, table.size(0));
  R3D_CHECK(op, positions.device(), at::kFloat, (grad_out), positions.size(0), lv.n_levels * table.size(1));
  R3D_CHECK(op, positions.device(), at::kFloat, (grad_grad_positions), positions.size(0), 3);
  const auto run = [&]() {
    R3D_DISPATCH(positions.device(), hash_encoding_bwd_bwd, grad_grad_positions, grad_out, positions, table, lv,
                 need_grad_out, need_table, need_positions);
  };
  const auto [dg, dtable, dx] = run();
  const auto opt = [](bool needed, const Tensor& t) { return needed ? OptTensor(t) : std::nullopt; };
  return {opt(need_grad_out, dg), opt(need_table, dtable), opt(need_positions, dx)};
}

}  // namespace relight3d
