// Occupancy-grid ops: CUDA kernels.
#include "common.h"
#include "cuda_utils.cuh"
#include "ops.h"

namespace relight3d {
namespace cuda {

namespace {

__global__ void morton3d_kernel(int64_t n, const int64_t* __restrict__ coords, int64_t* __restrict__ out) {
  const int64_t i = thread_index(n);
  if (i < 0) return;
  out[i] = morton3d(coords[3 * i], coords[3 * i + 1], coords[3 * i + 2]);
}

__global__ void morton3d_invert_kernel(int64_t n, const int64_t* __restrict__ codes, int64_t* __restrict__ out) {
  const int64_t i = thread_index(n);
  if (i < 0) return;
  out[3 * i] = compact_bits(codes[i]);
  out[3 * i + 1] = compact_bits(codes[i] >> 1);
  out[3 * i + 2] = compact_bits(codes[i] >> 2);
}

__global__ void cell_positions_kernel(int64_t n, const int64_t* __restrict__ indices, const float* __restrict__ aabb,
                                      int res, const float* __restrict__ jitter, float* __restrict__ out) {
  const int64_t i = thread_index(n);
  if (i < 0) return;
  const GridGeom g = make_grid_geom(aabb, 1, res);
  if (jitter != nullptr) {
    cell_position(g, indices[i], jitter[3 * i], jitter[3 * i + 1], jitter[3 * i + 2], out + 3 * i);
  } else {
    cell_position(g, indices[i], 0.5f, 0.5f, 0.5f, out + 3 * i);
  }
}

// pass 1 of the EMA update: touched cells (grid >= 0) get grid * decay (duplicates write the same value)
__global__ void grid_decay_kernel(int64_t n, const int64_t* __restrict__ indices, const float* __restrict__ grid,
                                  int64_t m, float decay, float* __restrict__ out) {
  const int64_t k = thread_index(n);
  if (k < 0) return;
  const int64_t i = indices[k];
  if (i < 0 || i >= m) return;
  if (grid[i] >= 0.0f) out[i] = grid[i] * decay;
}

// pass 2: out = max(out, value)
__global__ void grid_max_kernel(int64_t n, const int64_t* __restrict__ indices, const float* __restrict__ values,
                                const float* __restrict__ grid, int64_t m, float* __restrict__ out) {
  const int64_t k = thread_index(n);
  if (k < 0) return;
  const int64_t i = indices[k];
  if (i < 0 || i >= m) return;
  if (grid[i] >= 0.0f) atomic_max_float(out + i, values[k]);
}

__global__ void pack_bitfield_kernel(int64_t nb, const float* __restrict__ grid, float threshold,
                                     uint8_t* __restrict__ out) {
  const int64_t i = thread_index(nb);
  if (i < 0) return;
  uint8_t byte = 0;
  for (int bit = 0; bit < 8; ++bit) byte |= static_cast<uint8_t>(grid[8 * i + bit] > threshold) << bit;
  out[i] = byte;
}

__global__ void unpack_bitfield_kernel(int64_t nb, const uint8_t* __restrict__ bits, bool* __restrict__ out) {
  const int64_t i = thread_index(nb);
  if (i < 0) return;
  const uint8_t byte = bits[i];
  for (int bit = 0; bit < 8; ++bit) out[8 * i + bit] = (byte >> bit) & 1;
}

__global__ void lookup_kernel(int64_t n, const float* __restrict__ pos, const uint8_t* __restrict__ bits,
                              const float* __restrict__ aabb, int n_cascades, int res, bool* __restrict__ out) {
  const int64_t i = thread_index(n);
  if (i < 0) return;
  const GridGeom g = make_grid_geom(aabb, n_cascades, res);
  out[i] = grid_occupied(g, bits, pos[3 * i], pos[3 * i + 1], pos[3 * i + 2]);
}

}  // namespace

Tensor morton3d_fwd(const Tensor& coords) {
  const c10::cuda::CUDAGuard guard(coords.device());
  const int64_t n = coords.size(0);
  Tensor out = at::empty({n}, coords.options());
  R3D_LAUNCH(morton3d_kernel, n, coords.data_ptr<int64_t>(), out.data_ptr<int64_t>());
  return out;
}

Tensor morton3d_invert_fwd(const Tensor& codes) {
  const c10::cuda::CUDAGuard guard(codes.device());
  const int64_t n = codes.size(0);
  Tensor out = at::empty({n, 3}, codes.options());
  R3D_LAUNCH(morton3d_invert_kernel, n, codes.data_ptr<int64_t>(), out.data_ptr<int64_t>());
  return out;
}

Tensor occupancy_cell_positions_fwd(const Tensor& indices, const Tensor& aabb, int64_t res, const OptTensor& jitter) {
  const c10::cuda::CUDAGuard guard(indices.device());
  const int64_t n = indices.size(0);
  Tensor out = at::empty({n, 3}, aabb.options());
  R3D_LAUNCH(cell_positions_kernel, n, indices.data_ptr<int64_t>(), aabb.data_ptr<float>(), static_cast<int>(res),
             jitter.has_value() ? jitter->data_ptr<float>() : nullptr, out.data_ptr<float>());
  return out;
}

Tensor occupancy_grid_update_fwd(const Tensor& density_grid, const Tensor& indices, const Tensor& values,
                                 double decay) {
  const c10::cuda::CUDAGuard guard(density_grid.device());
  Tensor out = density_grid.clone();
  const int64_t n = indices.size(0), m = density_grid.numel();
  R3D_LAUNCH(grid_decay_kernel, n, indices.data_ptr<int64_t>(), density_grid.data_ptr<float>(), m,
             static_cast<float>(decay), out.data_ptr<float>());
  R3D_LAUNCH(grid_max_kernel, n, indices.data_ptr<int64_t>(), values.data_ptr<float>(), density_grid.data_ptr<float>(),
             m, out.data_ptr<float>());
  return out;
}

Tensor pack_bitfield_fwd(const Tensor& density_grid, double threshold) {
  const c10::cuda::CUDAGuard guard(density_grid.device());
  const int64_t nb = density_grid.numel() / 8;
  Tensor out = at::empty({nb}, density_grid.options().dtype(at::kByte));
  R3D_LAUNCH(pack_bitfield_kernel, nb, density_grid.data_ptr<float>(), static_cast<float>(threshold),
             out.data_ptr<uint8_t>());
  return out;
}

Tensor unpack_bitfield_fwd(const Tensor& bitfield) {
  const c10::cuda::CUDAGuard guard(bitfield.device());
  const int64_t nb = bitfield.size(0);
  Tensor out = at::empty({nb * 8}, bitfield.options().dtype(at::kBool));
  R3D_LAUNCH(unpack_bitfield_kernel, nb, bitfield.data_ptr<uint8_t>(), out.data_ptr<bool>());
  return out;
}

Tensor occupancy_lookup_fwd(const Tensor& positions, const Tensor& bitfield, const Tensor& aabb, int64_t n_cascades,
                            int64_t res) {
  const c10::cuda::CUDAGuard guard(positions.device());
  const int64_t n = positions.size(0);
  Tensor out = at::empty({n}, positions.options().dtype(at::kBool));
  R3D_LAUNCH(lookup_kernel, n, positions.data_ptr<float>(), bitfield.data_ptr<uint8_t>(), aabb.data_ptr<float>(),
             static_cast<int>(n_cascades), static_cast<int>(res), out.data_ptr<bool>());
  return out;
}

}  // namespace cuda
}  // namespace relight3d
