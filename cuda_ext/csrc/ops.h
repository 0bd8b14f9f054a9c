// The ray-marching ops (and the sampling of TensoRF's VM decomposition): the checked entry points, defined in
// <op>.cpp and bound in ext.cpp, and the CPU / CUDA implementations of the ops whose algorithms differ between the
// devices (namespaces relight3d::cpu, <op>_cpu.cpp, and relight3d::cuda, <op>_cuda.cu). The other ops run the same
// functors (kernels.h) on either device.
//
// Conventions: float tensors are float32, integer tensors int64, bitfields uint8; every tensor is contiguous and on
// one device (the entry points check this; the Python wrapper makes tensors contiguous and integer tensors int64).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>
#include <vector>

namespace relight3d {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

std::tuple<Tensor, Tensor> ray_aabb_intersect_fwd(const Tensor& rays_o, const Tensor& rays_d, const Tensor& aabb,
                                                  double near_min);

Tensor morton3d_fwd(const Tensor& coords);
Tensor morton3d_invert_fwd(const Tensor& codes);
Tensor occupancy_cell_positions_fwd(const Tensor& indices, const Tensor& aabb, int64_t res, const OptTensor& jitter);
Tensor occupancy_grid_update_fwd(const Tensor& density_grid, const Tensor& indices, const Tensor& values, double decay);
Tensor pack_bitfield_fwd(const Tensor& density_grid, double threshold);
Tensor unpack_bitfield_fwd(const Tensor& bitfield);
Tensor occupancy_lookup_fwd(const Tensor& positions, const Tensor& bitfield, const Tensor& aabb, int64_t n_cascades,
                            int64_t res);

// returns (ray_indices, t_starts, t_ends)
std::tuple<Tensor, Tensor, Tensor> march_rays_train_fwd(const Tensor& rays_o, const Tensor& rays_d,
                                                        const Tensor& t_near, const Tensor& t_far,
                                                        const Tensor& bitfield, const Tensor& aabb,
                                                        int64_t n_cascades, int64_t res, double dt_min, double dt_max,
                                                        double dt_gamma, int64_t max_steps, const OptTensor& jitter);
// returns (t_starts, t_ends) of shape [n_alive, n_steps]; advances t[alive] in place
std::tuple<Tensor, Tensor> march_rays_inference_fwd(const Tensor& rays_o, const Tensor& rays_d, const Tensor& t,
                                                    const Tensor& t_far, const Tensor& alive, const Tensor& bitfield,
                                                    const Tensor& aabb, int64_t n_cascades, int64_t res,
                                                    double dt_min, double dt_max, double dt_gamma, int64_t n_steps,
                                                    int64_t max_candidates);

// returns (weights, trans)
std::tuple<Tensor, Tensor> render_weights_fwd(const Tensor& sigmas, const Tensor& t_starts, const Tensor& t_ends,
                                              const Tensor& ray_indices, int64_t n_rays, double t_thresh);
// returns grad_sigmas
Tensor render_weights_bwd(const Tensor& grad_weights, const OptTensor& grad_trans, const Tensor& sigmas,
                          const Tensor& t_starts, const Tensor& t_ends, const Tensor& ray_indices, int64_t n_rays,
                          const Tensor& weights, const Tensor& trans, double t_thresh);

Tensor accumulate_along_rays_fwd(const Tensor& weights, const OptTensor& values, const Tensor& ray_indices,
                                 int64_t n_rays);
// returns (grad_weights, grad_values or None)
std::tuple<Tensor, OptTensor> accumulate_along_rays_bwd(const Tensor& grad_out, const Tensor& weights,
                                                        const OptTensor& values, const Tensor& ray_indices,
                                                        int64_t n_rays);

// returns (weights, image, depth, acc, trans); trans is kept for the backward pass
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> composite_rays_train_fwd(const Tensor& sigmas, const Tensor& rgbs,
                                                                            const Tensor& t_starts,
                                                                            const Tensor& t_ends,
                                                                            const Tensor& ray_indices, int64_t n_rays,
                                                                            double t_thresh);
// returns (grad_sigmas, grad_rgbs)
std::tuple<Tensor, Tensor> composite_rays_train_bwd(const Tensor& grad_weights, const Tensor& grad_image,
                                                    const Tensor& grad_depth, const Tensor& grad_acc,
                                                    const Tensor& sigmas, const Tensor& rgbs, const Tensor& t_starts,
                                                    const Tensor& t_ends, const Tensor& ray_indices, int64_t n_rays,
                                                    const Tensor& weights, const Tensor& trans, double t_thresh);

// updates image, depth, acc, trans in place at the rows `alive`; returns the rays of `alive` still alive
Tensor composite_rays_inference_fwd(const Tensor& sigmas, const Tensor& rgbs, const Tensor& t_starts,
                                    const Tensor& t_ends, const Tensor& alive, const Tensor& t, const Tensor& t_far,
                                    const Tensor& image, const Tensor& depth, const Tensor& acc, const Tensor& trans,
                                    double t_thresh);

// TensoRF VM sampling (see vm_common.h): planes [3, C, H, W], lines [3, C, L, 1], xyz [n, 3] in [-1, 1];
// returns the features [n, 3 * C] (column p * C + c)
Tensor sample_vm_features_fwd(const Tensor& planes, const Tensor& lines, const Tensor& xyz);
// returns (grad_planes, grad_lines); no gradient w.r.t. xyz
std::tuple<Tensor, Tensor> sample_vm_features_bwd(const Tensor& grad_out, const Tensor& planes, const Tensor& lines,
                                                  const Tensor& xyz);

// Multiresolution hash encoding (see hash_encoding.h): positions [n, 3], table [rows, F], the layout's fields
// (relight3d.ops.HashGridLayout); returns the features [n, levels * F] (column l * F + k)
Tensor hash_encoding_fwd(const Tensor& positions, const Tensor& table, const std::vector<double>& scales,
                         const std::vector<int64_t>& resolutions, const std::vector<int64_t>& offsets,
                         const std::vector<bool>& dense);
// returns (grad_table, grad_positions), each None unless asked for
std::tuple<OptTensor, OptTensor> hash_encoding_bwd(const Tensor& grad_out, const Tensor& positions,
                                                   const Tensor& table, const std::vector<double>& scales,
                                                   const std::vector<int64_t>& resolutions,
                                                   const std::vector<int64_t>& offsets, const std::vector<bool>& dense,
                                                   bool need_table, bool need_positions);
// the derivatives of <grad_grad_positions, grad_positions> w.r.t. (grad_out, table, positions), each None unless
// asked for
std::tuple<OptTensor, OptTensor, OptTensor> hash_encoding_bwd_bwd(
    const Tensor& grad_grad_positions, const Tensor& grad_out, const Tensor& positions, const Tensor& table,
    const std::vector<double>& scales, const std::vector<int64_t>& resolutions, const std::vector<int64_t>& offsets,
    const std::vector<bool>& dense, bool need_grad_out, bool need_table, bool need_positions);

#define R3D_DEVICE_SPECIFIC_OPS                                                                                   \
  Tensor occupancy_grid_update_fwd(const Tensor& density_grid, const Tensor& indices, const Tensor& values,      \
                                   double decay);                                                                \
  Tensor sample_vm_features_fwd(const Tensor& planes, const Tensor& lines, const Tensor& xyz);                   \
  std::tuple<Tensor, Tensor> sample_vm_features_bwd(const Tensor& grad_out, const Tensor& planes,                \
                                                    const Tensor& lines, const Tensor& xyz);

namespace cpu {
R3D_DEVICE_SPECIFIC_OPS
}  // namespace cpu

#ifdef WITH_CUDA
namespace cuda {
R3D_DEVICE_SPECIFIC_OPS
}  // namespace cuda
#endif

}  // namespace relight3d
