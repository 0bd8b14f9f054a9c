# ruff: noqa: F722, UP037  (jaxtyping shape strings such as "n 3" are not forward references)
"""Compiled implementations of the ray-marching ops, calling the extension ``relight3d._C`` (see ``cuda_ext/``).

Every public function here has the same signature and semantics as its counterpart in
:mod:`relight3d.ops._torch_impl`; :mod:`relight3d.ops.ray_marching` checks the inputs and picks one or the other.
The extension takes contiguous float32 / int64 / uint8 tensors, so integer inputs are widened to int64 (a bitfield
narrowed to uint8, which keeps the bits the reference reads) and every input is made contiguous here.

Differentiable ops (:func:`render_weights`, :func:`accumulate_along_rays`, :func:`composite_rays_train`) go through
private :class:`torch.autograd.Function` s whose backward calls the ``<op>_bwd`` kernels. Their kernels
differentiate with respect to sigmas / weights / values / rgbs only; the other ops have no backward kernel at all.
Where autograd would need a gradient the kernels do not provide (a float input such as ``t_starts`` or ``rays_o``
that requires grad), the op runs the torch reference instead, so gradients are never dropped silently.

:func:`sample_vm_features` (TensoRF's VM decomposition) follows the same pattern: its kernels differentiate w.r.t.
``planes`` and ``lines``; points ``xyz`` that require grad send it to the ``grid_sample`` reference.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Optional, Tuple

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from torch.autograd.function import once_differentiable

from relight3d._optional import warn_once
from relight3d.ops import _backend, _torch_impl


def _ext() -> ModuleType:
    ext = _backend.extension()
    if ext is None:  # ray_marching only dispatches here once the extension has loaded
        raise RuntimeError("relight3d._C is not available")
    return ext


def _needs_grad(*tensors: Optional[Tensor]) -> bool:
    """Whether autograd would need a gradient through any of these inputs."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _c(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.contiguous()


def _i64(t: Tensor) -> Tensor:
    return t.to(torch.int64).contiguous()


def _u8(t: Tensor) -> Tensor:
    return t.to(torch.uint8).contiguous()


# ---------------------------------------------------------------------------------------------------------------------
# Non-differentiable ops
# ---------------------------------------------------------------------------------------------------------------------


def ray_aabb_intersect(
    rays_o: Float[Tensor, "n 3"], rays_d: Float[Tensor, "n 3"], aabb: Float[Tensor, "6"], near_min: float = 0.0
) -> Tuple[Float[Tensor, " n"], Float[Tensor, " n"]]:
    if _needs_grad(rays_o, rays_d, aabb):
        return _torch_impl.ray_aabb_intersect(rays_o, rays_d, aabb, near_min)
    t_near, t_far = _ext().ray_aabb_intersect_fwd(_c(rays_o), _c(rays_d), _c(aabb), float(near_min))
    return t_near, t_far


def morton3d(coords: Int[Tensor, "n 3"]) -> Int[Tensor, " n"]:
    return _ext().morton3d_fwd(_i64(coords))


def morton3d_invert(codes: Int[Tensor, " n"]) -> Int[Tensor, "n 3"]:
    return _ext().morton3d_invert_fwd(_i64(codes))


def occupancy_cell_positions(
    indices: Int[Tensor, " n"], aabb: Float[Tensor, "6"], res: int, jitter: Optional[Float[Tensor, "n 3"]] = None
) -> Float[Tensor, "n 3"]:
    if _needs_grad(aabb, jitter):
        return _torch_impl.occupancy_cell_positions(indices, aabb, res, jitter)
    return _ext().occupancy_cell_positions_fwd(_i64(indices), _c(aabb), int(res), _c(jitter))


def occupancy_grid_update(
    density_grid: Float[Tensor, "c m"], indices: Int[Tensor, " n"], values: Float[Tensor, " n"], decay: float
) -> Float[Tensor, "c m"]:
    if _needs_grad(density_grid, values):
        return _torch_impl.occupancy_grid_update(density_grid, indices, values, decay)
    return _ext().occupancy_grid_update_fwd(_c(density_grid), _i64(indices), _c(values), float(decay))


def pack_bitfield(density_grid: Float[Tensor, "c m"], threshold: float) -> Int[Tensor, " b"]:
    return _ext().pack_bitfield_fwd(_c(density_grid), float(threshold))


def unpack_bitfield(bitfield: Int[Tensor, " b"]) -> Bool[Tensor, " m"]:
    return _ext().unpack_bitfield_fwd(_u8(bitfield))


def occupancy_lookup(
    positions: Float[Tensor, "n 3"], bitfield: Int[Tensor, " b"], aabb: Float[Tensor, "6"], n_cascades: int, res: int
) -> Bool[Tensor, " n"]:
    return _ext().occupancy_lookup_fwd(_c(positions), _u8(bitfield), _c(aabb), int(n_cascades), int(res))


def march_rays_train(
    rays_o: Float[Tensor, "n 3"],
    rays_d: Float[Tensor, "n 3"],
    t_near: Float[Tensor, " n"],
    t_far: Float[Tensor, " n"],
    bitfield: Int[Tensor, " b"],
    aabb: Float[Tensor, "6"],
    n_cascades: int,
    res: int,
    dt_min: float,
    dt_max: float,
    dt_gamma: float = 0.0,
    max_steps: int = 1024,
    jitter: Optional[Float[Tensor, " n"]] = None,
) -> Tuple[Int[Tensor, " s"], Float[Tensor, " s"], Float[Tensor, " s"]]:
    if _needs_grad(rays_o, rays_d, t_near, t_far, aabb, jitter):
        return _torch_impl.march_rays_train(rays_o, rays_d, t_near, t_far, bitfield, aabb, n_cascades, res, dt_min,
                                            dt_max, dt_gamma, max_steps, jitter)
    ray_indices, t_starts, t_ends = _ext().march_rays_train_fwd(
        _c(rays_o), _c(rays_d), _c(t_near), _c(t_far), _u8(bitfield), _c(aabb), int(n_cascades), int(res),
        float(dt_min), float(dt_max), float(dt_gamma), int(max_steps), _c(jitter),
    )
    return ray_indices, t_starts, t_ends


def march_rays_inference(
    rays_o: Float[Tensor, "n 3"],
    rays_d: Float[Tensor, "n 3"],
    t: Float[Tensor, " n"],
    t_far: Float[Tensor, " n"],
    alive: Int[Tensor, " a"],
    bitfield: Int[Tensor, " b"],
    aabb: Float[Tensor, "6"],
    n_cascades: int,
    res: int,
    dt_min: float,
    dt_max: float,
    dt_gamma: float = 0.0,
    n_steps: int = 8,
    max_candidates: int = 1024,
) -> Tuple[Float[Tensor, "a k"], Float[Tensor, "a k"]]:
    t_state = t.contiguous()  # the kernel advances it in place
    t_starts, t_ends = _ext().march_rays_inference_fwd(
        _c(rays_o), _c(rays_d), t_state, _c(t_far), _i64(alive), _u8(bitfield), _c(aabb), int(n_cascades), int(res),
        float(dt_min), float(dt_max), float(dt_gamma), int(n_steps), int(max_candidates),
    )
    if t_state is not t:
        t.copy_(t_state)
    return t_starts, t_ends


def composite_rays_inference(
    sigmas: Float[Tensor, "a k"],
    rgbs: Float[Tensor, "a k 3"],
    t_starts: Float[Tensor, "a k"],
    t_ends: Float[Tensor, "a k"],
    alive: Int[Tensor, " a"],
    t: Float[Tensor, " n"],
    t_far: Float[Tensor, " n"],
    image: Float[Tensor, "n 3"],
    depth: Float[Tensor, " n"],
    acc: Float[Tensor, " n"],
    trans: Float[Tensor, " n"],
    t_thresh: float = 1e-4,
) -> Int[Tensor, " a2"]:
    state = [x.contiguous() for x in (image, depth, acc, trans)]  # updated in place by the kernel
    still_alive = _ext().composite_rays_inference_fwd(
        _c(sigmas), _c(rgbs), _c(t_starts), _c(t_ends), _i64(alive), _c(t), _c(t_far), *state, float(t_thresh)
    )
    for x, y in zip((image, depth, acc, trans), state, strict=True):
        if x is not y:
            x.copy_(y)
    return still_alive


# ---------------------------------------------------------------------------------------------------------------------
# Differentiable ops
# ---------------------------------------------------------------------------------------------------------------------


class _RenderWeights(torch.autograd.Function):
    """``(weights, trans)`` of packed samples; backward w.r.t. ``sigmas`` (see ``render_weights_segment_bwd``)."""

    @staticmethod
    def forward(
        ctx: Any, sigmas: Tensor, t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor, n_rays: int, t_thresh: float
    ) -> Tuple[Tensor, Tensor]:
        sigmas, t_starts, t_ends, ray_indices = _c(sigmas), _c(t_starts), _c(t_ends), _i64(ray_indices)
        weights, trans = _ext().render_weights_fwd(sigmas, t_starts, t_ends, ray_indices, int(n_rays), float(t_thresh))
        ctx.save_for_backward(sigmas, t_starts, t_ends, ray_indices, weights, trans)
        ctx.n_rays, ctx.t_thresh = int(n_rays), float(t_thresh)
        ctx.set_materialize_grads(False)
        return weights, trans

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_weights: Optional[Tensor], grad_trans: Optional[Tensor]
    ) -> Tuple[Optional[Tensor], ...]:
        sigmas, t_starts, t_ends, ray_indices, weights, trans = ctx.saved_tensors
        if not ctx.needs_input_grad[0] or (grad_weights is None and grad_trans is None):
            return None, None, None, None, None, None
        grad_weights = torch.zeros_like(weights) if grad_weights is None else grad_weights.contiguous()
        grad_sigmas = _ext().render_weights_bwd(grad_weights, _c(grad_trans), sigmas, t_starts, t_ends, ray_indices,
                                                ctx.n_rays, weights, trans, ctx.t_thresh)
        return grad_sigmas, None, None, None, None, None


def render_weights(
    sigmas: Float[Tensor, " s"],
    t_starts: Float[Tensor, " s"],
    t_ends: Float[Tensor, " s"],
    ray_indices: Int[Tensor, " s"],
    n_rays: int,
    t_thresh: float = 1e-4,
) -> Tuple[Float[Tensor, " s"], Float[Tensor, " s"]]:
    if _needs_grad(t_starts, t_ends):
        return _torch_impl.render_weights(sigmas, t_starts, t_ends, ray_indices, n_rays, t_thresh)
    weights, trans = _RenderWeights.apply(sigmas, t_starts, t_ends, ray_indices, n_rays, t_thresh)
    return weights, trans


class _Accumulate(torch.autograd.Function):
    """``out[r] = sum_{i in r} w_i v_i``; backward w.r.t. ``weights`` and ``values``."""

    @staticmethod
    def forward(ctx: Any, weights: Tensor, values: Optional[Tensor], ray_indices: Tensor, n_rays: int) -> Tensor:
        weights, values, ray_indices = _c(weights), _c(values), _i64(ray_indices)
        out = _ext().accumulate_along_rays_fwd(weights, values, ray_indices, int(n_rays))
        ctx.save_for_backward(weights, values, ray_indices)
        ctx.n_rays = int(n_rays)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> Tuple[Optional[Tensor], ...]:
        weights, values, ray_indices = ctx.saved_tensors
        if not (ctx.needs_input_grad[0] or ctx.needs_input_grad[1]):
            return None, None, None, None
        grad_weights, grad_values = _ext().accumulate_along_rays_bwd(grad_out.contiguous(), weights, values,
                                                                     ray_indices, ctx.n_rays)
        return (
            grad_weights if ctx.needs_input_grad[0] else None,
            grad_values if ctx.needs_input_grad[1] else None,
            None,
            None,
        )


def accumulate_along_rays(
    weights: Float[Tensor, " s"], values: Optional[Float[Tensor, "s c"]], ray_indices: Int[Tensor, " s"], n_rays: int
) -> Float[Tensor, "n c"]:
    return _Accumulate.apply(weights, values, ray_indices, n_rays)


class _Composite(torch.autograd.Function):
    """Fused ``(weights, image, depth, acc)``; backward w.r.t. ``sigmas`` and ``rgbs``."""

    @staticmethod
    def forward(
        ctx: Any,
        sigmas: Tensor,
        rgbs: Tensor,
        t_starts: Tensor,
        t_ends: Tensor,
        ray_indices: Tensor,
        n_rays: int,
        t_thresh: float,
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        sigmas, rgbs, t_starts, t_ends, ray_indices = _c(sigmas), _c(rgbs), _c(t_starts), _c(t_ends), _i64(ray_indices)
        weights, image, depth, acc, trans = _ext().composite_rays_train_fwd(sigmas, rgbs, t_starts, t_ends, ray_indices,
                                                                            int(n_rays), float(t_thresh))
        ctx.save_for_backward(sigmas, rgbs, t_starts, t_ends, ray_indices, weights, trans)
        ctx.n_rays, ctx.t_thresh = int(n_rays), float(t_thresh)
        ctx.set_materialize_grads(False)
        return weights, image, depth, acc

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any,
        grad_weights: Optional[Tensor],
        grad_image: Optional[Tensor],
        grad_depth: Optional[Tensor],
        grad_acc: Optional[Tensor],
    ) -> Tuple[Optional[Tensor], ...]:
        sigmas, rgbs, t_starts, t_ends, ray_indices, weights, trans = ctx.saved_tensors
        if not (ctx.needs_input_grad[0] or ctx.needs_input_grad[1]):
            return (None,) * 7
        n = ctx.n_rays

        def grad_or_zeros(g: Optional[Tensor], shape: Tuple[int, ...]) -> Tensor:
            return sigmas.new_zeros(shape) if g is None else g.contiguous()

        grad_sigmas, grad_rgbs = _ext().composite_rays_train_bwd(
            grad_or_zeros(grad_weights, tuple(sigmas.shape)), grad_or_zeros(grad_image, (n, 3)),
            grad_or_zeros(grad_depth, (n,)), grad_or_zeros(grad_acc, (n,)), sigmas, rgbs, t_starts, t_ends,
            ray_indices, n, weights, trans, ctx.t_thresh,
        )
        return (
            grad_sigmas if ctx.needs_input_grad[0] else None,
            grad_rgbs if ctx.needs_input_grad[1] else None,
            None,
            None,
            None,
            None,
            None,
        )


def composite_rays_train(
    sigmas: Float[Tensor, " s"],
    rgbs: Float[Tensor, "s 3"],
    t_starts: Float[Tensor, " s"],
    t_ends: Float[Tensor, " s"],
    ray_indices: Int[Tensor, " s"],
    n_rays: int,
    t_thresh: float = 1e-4,
) -> Tuple[Float[Tensor, " s"], Float[Tensor, "n 3"], Float[Tensor, " n"], Float[Tensor, " n"]]:
    if _needs_grad(t_starts, t_ends):
        return _torch_impl.composite_rays_train(sigmas, rgbs, t_starts, t_ends, ray_indices, n_rays, t_thresh)
    weights, image, depth, acc = _Composite.apply(sigmas, rgbs, t_starts, t_ends, ray_indices, n_rays, t_thresh)
    return weights, image, depth, acc


# ---------------------------------------------------------------------------------------------------------------------
# TensoRF VM sampling
# ---------------------------------------------------------------------------------------------------------------------


class _SampleVMFeatures(torch.autograd.Function):
    """Plane * line features of a VM decomposition; backward w.r.t. ``planes`` and ``lines`` (not ``xyz``).

    The backward kernel recomputes the interpolated plane and line values instead of saving them: it visits the same
    corners to scatter the gradients anyway, and saving them would cost two more ``[n, 3 * C]`` tensors.
    """

    @staticmethod
    def forward(ctx: Any, planes: Tensor, lines: Tensor, xyz: Tensor) -> Tensor:
        planes, lines, xyz = _c(planes), _c(lines), _c(xyz)
        ctx.save_for_backward(planes, lines, xyz)
        return _ext().sample_vm_features_fwd(planes, lines, xyz)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> Tuple[Optional[Tensor], ...]:
        planes, lines, xyz = ctx.saved_tensors
        if not (ctx.needs_input_grad[0] or ctx.needs_input_grad[1]):
            return None, None, None
        grad_planes, grad_lines = _ext().sample_vm_features_bwd(grad_out.contiguous(), planes, lines, xyz)
        return (
            grad_planes if ctx.needs_input_grad[0] else None,
            grad_lines if ctx.needs_input_grad[1] else None,
            None,
        )


def sample_vm_features(
    planes: Float[Tensor, "3 c h w"], lines: Float[Tensor, "3 c l 1"], xyz: Float[Tensor, "n 3"]
) -> Float[Tensor, "n 3c"]:
    # The kernels have no gradient w.r.t. the points (nor a double backward): normals computed by autograd through
    # the density (RelightableField.normals, possibly with create_graph=True) take the torch path.
    if _needs_grad(xyz):
        return _torch_impl.sample_vm_features(planes, lines, xyz)
    if not hasattr(_ext(), "sample_vm_features_fwd"):
        warn_once(
            "relight3d-ext-vm",
            "relight3d: relight3d._C was built from older sources without sample_vm_features; using the torch "
            "implementation. Rebuild it with `pip install --no-build-isolation -e .`.",
        )
        return _torch_impl.sample_vm_features(planes, lines, xyz)
    return _SampleVMFeatures.apply(planes, lines, xyz)
