"""Ray marching through occupancy grids, volume rendering of packed samples, TensoRF's VM sampling and the
multiresolution hash encoding of Instant-NGP.

The lowest layer of relight3d, with :mod:`relight3d.geometry` and :mod:`relight3d.errors`: it imports nothing from
relight3d but :mod:`relight3d._optional`. Fields and models march and composite their rays with it.

Each op has three layers (the pattern of gsplat's ``_wrapper.py`` / ``_torch_impl.py``):

* the public function (:mod:`.ray_marching`, :mod:`.vm_sampling`, :mod:`.hash_encoding`): the signature, whose
  jaxtyping annotations are checked on every call, and the documentation;
* the compiled kernels (:mod:`._wrapper`, calling the extension ``relight3d._C`` built from ``cuda_ext/``, C++ for
  the CPU and CUDA), with private ``torch.autograd.Function`` s for the differentiable ops;
* the pure-torch reference (:mod:`._torch_impl`; :mod:`._torch_hash` for the hash encoding), which defines the
  semantics and is the fallback.

:mod:`._dispatch` holds the checks and picks the implementation for each call (the kernels where the extension is
loaded for the tensors' device and gives every gradient needed, else the reference); :mod:`._backend` loads the
extension lazily (``RELIGHT3D_OPS_BACKEND=torch`` forces the reference). Inputs on the wrong device or of the wrong
dtype raise; they are never moved or cast silently. :class:`OccupancyGrid` (:mod:`.occupancy`) keeps the grid that
the marching skips empty space with; the marchers take it as a :class:`PackedOccupancy` (its
:attr:`~OccupancyGrid.packed`), with a :class:`StepSchedule` (:mod:`.march_inputs`).
"""

from relight3d.ops._torch_impl import MISS_T
from relight3d.ops.hash_encoding import HashGridLayout, hash_encoding, hash_grid_layout
from relight3d.ops.march_inputs import PackedOccupancy, StepSchedule
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
    "HashGridLayout",
    "OccupancyGrid",
    "PackedOccupancy",
    "StepSchedule",
    "accumulate_along_rays",
    "composite_rays_inference",
    "composite_rays_train",
    "hash_encoding",
    "hash_grid_layout",
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
