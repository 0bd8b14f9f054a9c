// Occupancy-grid ops (Morton codes, cell positions, EMA update, bitfield packing, lookups): checks, then the
// functors of kernels.h on every element; the EMA update has its own CPU and CUDA algorithms (occupancy_cpu.cpp,
// occupancy_cuda.cu).
#include "kernels.h"
#include "ops.h"
#include "parallel.h"

namespace relight3d {

Tensor morton3d_fwd(const Tensor& coords) {
  R3D_CHECK("morton3d", coords.device(), at::kLong, (coords), -1, 3);
  const at::DeviceGuard guard(coords.device());
  Tensor codes = at::empty({coords.size(0)}, coords.options());
  for_each(coords.device(), coords.size(0), kGrainElementwise, Morton3d{cptr<int64_t>(coords), ptr<int64_t>(codes)});
  return codes;
}

Tensor morton3d_invert_fwd(const Tensor& codes) {
  R3D_CHECK("morton3d_invert", codes.device(), at::kLong, (codes), -1);
  const at::DeviceGuard guard(codes.device());
  Tensor coords = at::empty({codes.size(0), 3}, codes.options());
  for_each(codes.device(), codes.size(0), kGrainElementwise,
           Morton3dInvert{cptr<int64_t>(codes), ptr<int64_t>(coords)});
  return coords;
}

Tensor occupancy_cell_positions_fwd(const Tensor& indices, const Tensor& aabb, int64_t res, const OptTensor& jitter) {
  const char* op = "occupancy_cell_positions";
  const auto dev = indices.device();
  R3D_CHECK(op, dev, at::kLong, (indices), -1);
  R3D_CHECK(op, dev, at::kFloat, (jitter), indices.size(0), 3);
  R3D_CHECK(op, dev, at::kFloat, (aabb), 6);
  check_grid_layout(op, 1, res);
  const at::DeviceGuard guard(dev);
  Tensor out = at::empty({indices.size(0), 3}, aabb.options());
  for_each(dev, indices.size(0), kGrainElementwise,
           CellPositions{grid_ref(aabb, 1, res), cptr<int64_t>(indices), cptr<float>(jitter), ptr<float>(out)});
  return out;
}

Tensor occupancy_grid_update_fwd(const Tensor& density_grid, const Tensor& indices, const Tensor& values,
                                 double decay) {
  const char* op = "occupancy_grid_update";
  const auto dev = density_grid.device();
  R3D_CHECK(op, dev, at::kFloat, (density_grid));
  R3D_CHECK(op, dev, at::kLong, (indices), -1);
  R3D_CHECK(op, dev, at::kFloat, (values), indices.size(0));
  R3D_DISPATCH(dev, occupancy_grid_update_fwd, density_grid, indices, values, decay);
}

Tensor pack_bitfield_fwd(const Tensor& density_grid, double threshold) {
  const char* op = "pack_bitfield";
  R3D_CHECK(op, density_grid.device(), at::kFloat, (density_grid));
  TORCH_CHECK(density_grid.numel() % 8 == 0, op, ": the grid has ", density_grid.numel(),
              " cells, not a multiple of 8");
  const at::DeviceGuard guard(density_grid.device());
  Tensor bits = at::empty({density_grid.numel() / 8}, density_grid.options().dtype(at::kByte));
  for_each(density_grid.device(), bits.size(0), kGrainElementwise / 8,
           PackBitfield{cptr<float>(density_grid), static_cast<float>(threshold), ptr<uint8_t>(bits)});
  return bits;
}

Tensor unpack_bitfield_fwd(const Tensor& bitfield) {
  R3D_CHECK("unpack_bitfield", bitfield.device(), at::kByte, (bitfield), -1);
  const at::DeviceGuard guard(bitfield.device());
  Tensor cells = at::empty({bitfield.size(0) * 8}, bitfield.options().dtype(at::kBool));
  for_each(bitfield.device(), bitfield.size(0), kGrainElementwise / 8,
           UnpackBitfield{cptr<uint8_t>(bitfield), ptr<bool>(cells)});
  return cells;
}

Tensor occupancy_lookup_fwd(const Tensor& positions, const Tensor& bitfield, const Tensor& aabb, int64_t n_cascades,
                            int64_t res) {
  const char* op = "occupancy_lookup";
  const auto dev = positions.device();
  R3D_CHECK(op, dev, at::kFloat, (positions), -1, 3);
  check_grid(op, dev, bitfield, aabb, n_cascades, res);
  const at::DeviceGuard guard(dev);
  Tensor out = at::empty({positions.size(0)}, positions.options().dtype(at::kBool));
  for_each(dev, positions.size(0), kGrainElementwise / 4,
           OccupancyLookup{grid_ref(aabb, n_cascades, res), cptr<uint8_t>(bitfield), cptr<float>(positions),
                           ptr<bool>(out)});
  return out;
}

}  // namespace relight3d
