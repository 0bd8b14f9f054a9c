"""The compiled implementations of the ops: calls into the extension ``relight3d._C`` (see ``cuda_ext/``).

:func:`run` computes an op from the arguments of its public function (:mod:`relight3d.ops`), positionally, already
checked and with grids and step schedules unpacked into their fields, like the reference
:mod:`relight3d.ops._torch_impl`; :func:`can_run` says whether the kernels can.
The extension takes contiguous float32 / int64 / uint8 tensors, so every tensor argument is made contiguous and
integer index tensors are widened to int64 (:func:`_kernel_arg`). Ops that update tensors in place
(:data:`_IN_PLACE`) copy the result back into a non-contiguous argument.

The differentiable ops go through private :class:`torch.autograd.Function` s whose backward calls the ``<op>_bwd``
kernels. Their kernels differentiate with respect to some inputs only (:data:`_KERNEL_GRADS`: sigmas, weights,
values, rgbs, planes, lines); the other ops have no backward kernel at all. Where autograd would need a gradient the
kernels do not provide (``t_starts``, ``rays_o`` or the points ``xyz`` requiring grad), :func:`can_run` is false and
the op runs the reference instead, so gradients are never dropped silently. The hash encoding's kernels give every
gradient (positions and table), and second derivatives too.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Dict, Optional, Sequence, Tuple, Type

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from relight3d._optional import warn_once
from relight3d.ops import _backend


def _ext() -> ModuleType:
    ext = _backend.extension()
    if ext is None:  # the dispatcher only calls here once the extension has loaded
        raise RuntimeError("relight3d._C is not available")
    return ext


def _kernel_arg(x: Any) -> Any:
    """An argument as the extension takes it: tensors contiguous, integer tensors other than uint8 as int64."""
    if not isinstance(x, Tensor):
        return x
    if not (x.is_floating_point() or x.dtype in (torch.uint8, torch.bool)):
        x = x.to(torch.int64)
    return x.contiguous()


def _forward(op: str, args: Sequence[Any]) -> Any:
    """``<op>_fwd`` of the extension on ``args``; the in-place arguments of ``op`` get the kernel's updates."""
    kernel_args = [_kernel_arg(x) for x in args]
    out = getattr(_ext(), f"{op}_fwd")(*kernel_args)
    for i in _IN_PLACE.get(op, ()):
        if kernel_args[i] is not args[i]:
            args[i].copy_(kernel_args[i])
    return out


def _grads(ctx: Any, *grads: Optional[Tensor]) -> Tuple[Optional[Tensor], ...]:
    """The backward's outputs: ``grads`` for the first inputs, where autograd needs them, and None for the others."""
    padded = grads + (None,) * (len(ctx.needs_input_grad) - len(grads))
    return tuple(g if needed else None for g, needed in zip(padded, ctx.needs_input_grad))


class _RenderWeights(torch.autograd.Function):
    """``(weights, trans)`` of packed samples; backward w.r.t. ``sigmas`` (see ``render_weights_segment_bwd``)."""

    @staticmethod
    def forward(ctx: Any, *args: Any) -> Tuple[Tensor, Tensor]:
        sigmas, t_starts, t_ends, ray_indices, n_rays, t_thresh = (_kernel_arg(x) for x in args)
        weights, trans = _ext().render_weights_fwd(sigmas, t_starts, t_ends, ray_indices, n_rays, t_thresh)
        ctx.save_for_backward(sigmas, t_starts, t_ends, ray_indices, weights, trans)
        ctx.n_rays, ctx.t_thresh = n_rays, t_thresh
        ctx.set_materialize_grads(False)
        return weights, trans

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_weights: Optional[Tensor], grad_trans: Optional[Tensor]) -> Tuple[Any, ...]:
        sigmas, t_starts, t_ends, ray_indices, weights, trans = ctx.saved_tensors
        if grad_weights is None and grad_trans is None:
            return _grads(ctx)
        grad_weights = torch.zeros_like(weights) if grad_weights is None else grad_weights.contiguous()
        grad_sigmas = _ext().render_weights_bwd(grad_weights, _kernel_arg(grad_trans), sigmas, t_starts, t_ends,
                                                ray_indices, ctx.n_rays, weights, trans, ctx.t_thresh)  # fmt: skip
        return _grads(ctx, grad_sigmas)


class _Accumulate(torch.autograd.Function):
    """``out[r] = sum_{i in r} w_i v_i``; backward w.r.t. ``weights`` and ``values``."""

    @staticmethod
    def forward(ctx: Any, *args: Any) -> Tensor:
        weights, values, ray_indices, n_rays = (_kernel_arg(x) for x in args)
        ctx.save_for_backward(weights, values, ray_indices)
        ctx.n_rays = n_rays
        return _ext().accumulate_along_rays_fwd(weights, values, ray_indices, n_rays)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> Tuple[Optional[Tensor], ...]:
        weights, values, ray_indices = ctx.saved_tensors
        grads = _ext().accumulate_along_rays_bwd(grad_out.contiguous(), weights, values, ray_indices, ctx.n_rays)
        return _grads(ctx, *grads)


class _Composite(torch.autograd.Function):
    """Fused ``(weights, image, depth, acc)``; backward w.r.t. ``sigmas`` and ``rgbs``."""

    @staticmethod
    def forward(ctx: Any, *args: Any) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        sigmas, rgbs, t_starts, t_ends, ray_indices, n_rays, t_thresh = (_kernel_arg(x) for x in args)
        weights, image, depth, acc, trans = _ext().composite_rays_train_fwd(
            sigmas, rgbs, t_starts, t_ends, ray_indices, n_rays, t_thresh
        )
        ctx.save_for_backward(sigmas, rgbs, t_starts, t_ends, ray_indices, weights, trans)
        ctx.n_rays, ctx.t_thresh = n_rays, t_thresh
        ctx.set_materialize_grads(False)
        return weights, image, depth, acc

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *grad_outputs: Optional[Tensor]) -> Tuple[Optional[Tensor], ...]:
        sigmas, rgbs, t_starts, t_ends, ray_indices, weights, trans = ctx.saved_tensors
        n = ctx.n_rays
        # outputs without a cotangent count as zero
        shapes = (tuple(sigmas.shape), (n, 3), (n,), (n,))
        cotangents = [sigmas.new_zeros(s) if g is None else g.contiguous() for g, s in zip(grad_outputs, shapes)]
        grads = _ext().composite_rays_train_bwd(*cotangents, sigmas, rgbs, t_starts, t_ends, ray_indices, n, weights,
                                                trans, ctx.t_thresh)  # fmt: skip
        return _grads(ctx, *grads)


class _SampleVMFeatures(torch.autograd.Function):
    """Plane * line features of a VM decomposition; backward w.r.t. ``planes`` and ``lines`` (not ``xyz``).

    The backward kernel recomputes the interpolated plane and line values instead of saving them: it visits the same
    corners to scatter the gradients anyway, and saving them would cost two more ``[n, 3 * C]`` tensors.
    """

    @staticmethod
    def forward(ctx: Any, *args: Any) -> Tensor:
        planes, lines, xyz = (_kernel_arg(x) for x in args)
        ctx.save_for_backward(planes, lines, xyz)
        return _ext().sample_vm_features_fwd(planes, lines, xyz)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> Tuple[Optional[Tensor], ...]:
        planes, lines, xyz = ctx.saved_tensors
        return _grads(ctx, *_ext().sample_vm_features_bwd(grad_out.contiguous(), planes, lines, xyz))


def _pass_uses_input(ctx: Any, index: int) -> bool:
    """Whether the running backward pass uses the gradient of input ``index`` of the node ``ctx``.

    ``ctx.needs_input_grad`` says only whether an input requires grad. ``torch.autograd.grad(density, positions,
    create_graph=True)`` (autograd normals) runs the hash encoding's backward for the positions alone, and the table
    gradient it would scatter (as large as the table) is never read: the engine knows which nodes it will run, and
    this asks it (a private torch API, so anything unexpected falls back to "used").
    """
    try:
        node = ctx.next_functions[index][0]
        return node is not None and bool(torch._C._will_engine_execute_node(node))
    except (AttributeError, RuntimeError, IndexError):
        return True


class _HashEncoding(torch.autograd.Function):
    """Hash-grid features; backward w.r.t. ``positions`` and ``table`` by :class:`_HashEncodingBackward`, whose own
    backward gives the second derivatives (normals by autograd, trained with ``create_graph=True``).

    The inputs as given are saved, not their contiguous copies: with ``create_graph=True`` the backward's graph must
    reach them.
    """

    @staticmethod
    def forward(ctx: Any, positions: Tensor, table: Tensor, *layout: Any) -> Tensor:
        ctx.save_for_backward(positions, table)
        ctx.layout = layout
        return _ext().hash_encoding_fwd(_kernel_arg(positions), _kernel_arg(table), *layout)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> Tuple[Optional[Tensor], ...]:
        positions, table = ctx.saved_tensors
        need_positions, need_table = (ctx.needs_input_grad[i] and _pass_uses_input(ctx, i) for i in (0, 1))
        grad_table, grad_positions = _HashEncodingBackward.apply(
            grad_out, positions, table, ctx.layout, need_table, need_positions
        )
        return _grads(ctx, grad_positions, grad_table)


class _HashEncodingBackward(torch.autograd.Function):
    """``(grad_table, grad_positions)`` of the hash encoding for the cotangent ``grad_out`` (None where not asked for).

    Backward, for cotangents ``(t, v)`` of the two: ``hash_encoding_bwd_bwd`` takes ``v``; ``grad_table`` is
    ``sum w_c(positions) grad_out`` scattered to the corners, so ``t`` adds the features of table ``t`` to the
    gradient w.r.t. ``grad_out`` and the position gradient with table ``t`` to that w.r.t. ``positions``.
    """

    @staticmethod
    def forward(ctx: Any, grad_out: Tensor, positions: Tensor, table: Tensor, layout: Tuple[Any, ...],
                need_table: bool, need_positions: bool) -> Tuple[Optional[Tensor], Optional[Tensor]]:  # fmt: skip
        ctx.save_for_backward(grad_out, positions, table)
        ctx.layout = layout
        ctx.set_materialize_grads(False)
        g, x, t = (_kernel_arg(a) for a in (grad_out, positions, table))
        return _ext().hash_encoding_bwd(g, x, t, *layout, need_table, need_positions)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, d_table: Optional[Tensor], d_positions: Optional[Tensor]) -> Tuple[Optional[Tensor], ...]:
        g, x, t = (_kernel_arg(a) for a in ctx.saved_tensors)
        need_g, need_x, need_t = ctx.needs_input_grad[:3]
        dg = dx = dt = None
        if d_positions is not None:
            dg, dt, dx = _ext().hash_encoding_bwd_bwd(_kernel_arg(d_positions), g, x, t, *ctx.layout, need_g,
                                                      need_t, need_x)  # fmt: skip
        if d_table is not None:
            d_table = _kernel_arg(d_table)
            if need_g:  # (a point with a NaN coordinate adds nothing to grad_table: zero, not the NaN features)
                features = _ext().hash_encoding_fwd(x, d_table, *ctx.layout).masked_fill(x.isnan().any(-1, True), 0.0)
                dg = features if dg is None else dg + features
            if need_x:
                _, grad_x = _ext().hash_encoding_bwd(g, x, d_table, *ctx.layout, False, True)
                dx = grad_x if dx is None else dx + grad_x
        return _grads(ctx, dg, dx, dt)


_AUTOGRAD: Dict[str, Type[torch.autograd.Function]] = {
    "render_weights": _RenderWeights,
    "accumulate_along_rays": _Accumulate,
    "composite_rays_train": _Composite,
    "sample_vm_features": _SampleVMFeatures,
    "hash_encoding": _HashEncoding,
}
"""The differentiable ops, by name."""

_KERNEL_GRADS: Dict[str, Tuple[int, ...]] = {
    "render_weights": (0,),
    "accumulate_along_rays": (0, 1),
    "composite_rays_train": (0, 1),
    "sample_vm_features": (0, 1),
    "hash_encoding": (0, 1),
}
"""The positions of the arguments that the backward kernels differentiate, per op (none for the other ops)."""

_IN_PLACE: Dict[str, Tuple[int, ...]] = {"march_rays_inference": (2,), "composite_rays_inference": (7, 8, 9, 10)}
"""The positions of the arguments that the kernels update in place: the per-ray state of inference."""


def can_run(op: str, args: Sequence[Any]) -> bool:
    """Whether the kernels compute ``op`` on ``args``: the loaded extension has them, and no float tensor argument
    needs a gradient that they do not give."""
    if not hasattr(_ext(), f"{op}_fwd"):
        warn_once(
            f"relight3d-ext-{op}",
            f"relight3d: relight3d._C was built from older sources without {op}; using the torch implementation. "
            "Rebuild it with `pip install --no-build-isolation -e .`.",
        )
        return False
    if not torch.is_grad_enabled():
        return True
    differentiable = _KERNEL_GRADS.get(op, ())
    return not any(isinstance(x, Tensor) and x.requires_grad and i not in differentiable for i, x in enumerate(args))


def run(op: str, *args: Any) -> Any:
    """``op`` on the (checked, positional) arguments of its public function, by the compiled kernels."""
    if op in _AUTOGRAD:
        return _AUTOGRAD[op].apply(*args)
    return _forward(op, args)
