// Python bindings of relight3d._C: one <op>_fwd (and <op>_bwd where gradients flow, <op>_bwd_bwd for the hash
// encoding's second derivatives) per op (ray marching, the sampling of TensoRF's VM decomposition, the hash
// encoding), and WITH_CUDA telling whether the CUDA kernels were compiled in. The Python side is
// relight3d/ops/_wrapper.py.
#include <torch/extension.h>

#include "ops.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace r = relight3d;
  m.doc() = "relight3d ray-marching kernels (C++ CPU, and CUDA when WITH_CUDA)";
#ifdef WITH_CUDA
  m.attr("WITH_CUDA") = true;
#else
  m.attr("WITH_CUDA") = false;
#endif
  m.def("ray_aabb_intersect_fwd", &r::ray_aabb_intersect_fwd);
  m.def("morton3d_fwd", &r::morton3d_fwd);
  m.def("morton3d_invert_fwd", &r::morton3d_invert_fwd);
  m.def("occupancy_cell_positions_fwd", &r::occupancy_cell_positions_fwd);
  m.def("occupancy_grid_update_fwd", &r::occupancy_grid_update_fwd);
  m.def("pack_bitfield_fwd", &r::pack_bitfield_fwd);
  m.def("unpack_bitfield_fwd", &r::unpack_bitfield_fwd);
  m.def("occupancy_lookup_fwd", &r::occupancy_lookup_fwd);
  m.def("march_rays_train_fwd", &r::march_rays_train_fwd);
  m.def("march_rays_inference_fwd", &r::march_rays_inference_fwd);
  m.def("render_weights_fwd", &r::render_weights_fwd);
  m.def("render_weights_bwd", &r::render_weights_bwd);
  m.def("accumulate_along_rays_fwd", &r::accumulate_along_rays_fwd);
  m.def("accumulate_along_rays_bwd", &r::accumulate_along_rays_bwd);
  m.def("composite_rays_train_fwd", &r::composite_rays_train_fwd);
  m.def("composite_rays_train_bwd", &r::composite_rays_train_bwd);
  m.def("composite_rays_inference_fwd", &r::composite_rays_inference_fwd);
  m.def("sample_vm_features_fwd", &r::sample_vm_features_fwd);
  m.def("sample_vm_features_bwd", &r::sample_vm_features_bwd);
  m.def("hash_encoding_fwd", &r::hash_encoding_fwd);
  m.def("hash_encoding_bwd", &r::hash_encoding_bwd);
  m.def("hash_encoding_bwd_bwd", &r::hash_encoding_bwd_bwd);
}
