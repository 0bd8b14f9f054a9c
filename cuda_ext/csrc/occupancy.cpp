// Occupancy-grid ops (Morton codes, cell positions, EMA update, bitfield packing, lookups): checks and dispatch.
#include "checks.h"
#include "ops.h"

namespace relight3d {

namespace {

void check_grid_layout(const char* op, int64_t n_cascades, int64_t res) {
  TORCH_CHECK(res > 0 && res <= 1024 && res % 2 == 0, op, ": res must be even and in (0, 1024], got ", res);
  TORCH_CHECK(n_cascades >= 1 && n_cascades <= 30, op, ": n_cascades must be in [1, 30], got ", n_cascades);
}

}  // namespace

Tensor morton3d_fwd(const Tensor& coords) {
  const char* op = "morton3d";
  check_input(coords, op, "coords", at::kLong, coords.device());
  check_shape(coords, op, "coords", {coords.size(0), 3});
  R3D_DISPATCH(coords.device(), morton3d_fwd, coords);
}

Tensor morton3d_invert_fwd(const Tensor& codes) {
  const char* op = "morton3d_invert";
  check_input(codes, op, "codes", at::kLong, codes.device());
  TORCH_CHECK(codes.dim() == 1, op, ": 'codes' must be 1-D, got shape ", codes.sizes());
  R3D_DISPATCH(codes.device(), morton3d_invert_fwd, codes);
}

Tensor occupancy_cell_positions_fwd(const Tensor& indices, const Tensor& aabb, int64_t res, const OptTensor& jitter) {
  const char* op = "occupancy_cell_positions";
  const auto dev = indices.device();
  check_input(indices, op, "indices", at::kLong, dev);
  check_input(aabb, op, "aabb", at::kFloat, dev);
  TORCH_CHECK(indices.dim() == 1, op, ": 'indices' must be 1-D, got shape ", indices.sizes());
  check_shape(aabb, op, "aabb", {6});
  check_grid_layout(op, 1, res);
  if (jitter.has_value()) {
    check_input(*jitter, op, "jitter", at::kFloat, dev);
    check_shape(*jitter, op, "jitter", {indices.size(0), 3});
  }
  R3D_DISPATCH(dev, occupancy_cell_positions_fwd, indices, aabb, res, jitter);
}

Tensor occupancy_grid_update_fwd(const Tensor& density_grid, const Tensor& indices, const Tensor& values,
                                 double decay) {
  const char* op = "occupancy_grid_update";
  const auto dev = density_grid.device();
  check_input(density_grid, op, "density_grid", at::kFloat, dev);
  check_input(indices, op, "indices", at::kLong, dev);
  check_input(values, op, "values", at::kFloat, dev);
  TORCH_CHECK(indices.dim() == 1, op, ": 'indices' must be 1-D, got shape ", indices.sizes());
  check_shape(values, op, "values", {indices.size(0)});
  R3D_DISPATCH(dev, occupancy_grid_update_fwd, density_grid, indices, values, decay);
}

Tensor pack_bitfield_fwd(const Tensor& density_grid, double threshold) {
  const char* op = "pack_bitfield";
  check_input(density_grid, op, "density_grid", at::kFloat, density_grid.device());
  TORCH_CHECK(density_grid.numel() % 8 == 0, op, ": the grid has ", density_grid.numel(),
              " cells, not a multiple of 8");
  R3D_DISPATCH(density_grid.device(), pack_bitfield_fwd, density_grid, threshold);
}

Tensor unpack_bitfield_fwd(const Tensor& bitfield) {
  const char* op = "unpack_bitfield";
  check_input(bitfield, op, "bitfield", at::kByte, bitfield.device());
  TORCH_CHECK(bitfield.dim() == 1, op, ": 'bitfield' must be 1-D, got shape ", bitfield.sizes());
  R3D_DISPATCH(bitfield.device(), unpack_bitfield_fwd, bitfield);
}

Tensor occupancy_lookup_fwd(const Tensor& positions, const Tensor& bitfield, const Tensor& aabb, int64_t n_cascades,
                            int64_t res) {
  const char* op = "occupancy_lookup";
  const auto dev = positions.device();
  check_input(positions, op, "positions", at::kFloat, dev);
  check_input(bitfield, op, "bitfield", at::kByte, dev);
  check_input(aabb, op, "aabb", at::kFloat, dev);
  check_shape(positions, op, "positions", {positions.size(0), 3});
  check_shape(aabb, op, "aabb", {6});
  check_grid_layout(op, n_cascades, res);
  check_shape(bitfield, op, "bitfield", {n_cascades * res * res * res / 8});
  R3D_DISPATCH(dev, occupancy_lookup_fwd, positions, bitfield, aabb, n_cascades, res);
}

}  // namespace relight3d
