"""Ray marching through occupancy grids (and sampling of TensoRF's VM decomposition): the public API.

Each op is a public function that checks its inputs and dispatches to the compiled extension when one is available
for the tensors' device, or to the pure-torch reference in :mod:`relight3d.ops._torch_impl` otherwise. Inputs on the
wrong device or of the wrong dtype raise; they are never moved or cast silently.
"""

from relight3d.ops._torch_impl import MISS_T
from relight3d.ops.occupancy import OccupancyGrid
from relight3d.ops.ray_marching import (
    accumulate_along_rays,
    composite_rays_inference,
    composite_rays_train,
    march_rays_inference,
    march_rays_train,
    morton3d,
    morton3d_invert,
    occupancy_cell_positions,
    occupancy_grid_update,
    occupancy_lookup,
    pack_bitfield,
    ray_aabb_intersect,
    render_weights,
    unpack_bitfield,
)
from relight3d.ops.vm_sampling import sample_vm_features

__all__ = [
    "MISS_T",
    "OccupancyGrid",
    "accumulate_along_rays",
    "composite_rays_inference",
    "composite_rays_train",
    "march_rays_inference",
    "march_rays_train",
    "morton3d",
    "morton3d_invert",
    "occupancy_cell_positions",
    "occupancy_grid_update",
    "occupancy_lookup",
    "pack_bitfield",
    "ray_aabb_intersect",
    "render_weights",
    "sample_vm_features",
    "unpack_bitfield",
]
