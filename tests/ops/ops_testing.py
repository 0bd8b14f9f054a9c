"""Helpers of the kernel tests: run an op by the compiled kernels or by the torch reference, and compare the two."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import pytest
import torch
from torch import Tensor

import relight3d.ops as ops
from relight3d.ops import _backend, _dispatch, _torch_impl

EXT = _backend.extension()

needs_extension = pytest.mark.skipif(
    EXT is None,
    reason="the compiled extension relight3d._C is not built (or RELIGHT3D_OPS_BACKEND=torch): nothing to compare; "
    "build it with `pip install --no-build-isolation -e .`",
)
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

# explicit tolerances: (rtol, atol) per device, for values and for gradients (sums in another order)
TOL: Dict[str, Tuple[float, float]] = {"cpu": (1e-5, 1e-6), "cuda": (1e-4, 1e-5)}
GRAD_TOL: Dict[str, Tuple[float, float]] = {"cpu": (1e-4, 1e-5), "cuda": (1e-3, 1e-4)}

Runner = Callable[..., Any]


def assert_close(actual: Tensor, expected: Tensor, device: str, grad: bool = False) -> None:
    rtol, atol = (GRAD_TOL if grad else TOL)[device]
    torch.testing.assert_close(actual.cpu(), expected.cpu(), rtol=rtol, atol=atol)


def to(x: Optional[Tensor], device: str) -> Optional[Tensor]:
    return None if x is None else x.to(device)


def reference(op: str, *args: Any, **kwargs: Any) -> Any:
    """The public op ``op`` computed by the torch reference."""
    with _backend.torch_reference(op):
        return getattr(ops, op)(*args, **kwargs)


def compiled(op: str, *args: Any, **kwargs: Any) -> Any:
    """The public op ``op`` computed by the compiled kernels (fails if the dispatcher would pick the reference)."""
    public = getattr(ops, op)
    bound = inspect.signature(public).bind(*args, **kwargs)
    bound.apply_defaults()
    chosen = _dispatch.implementation(op, tuple(bound.arguments.values()))
    assert chosen is not getattr(_torch_impl, op), f"{op} would run the torch reference, not the kernels"
    return public(*args, **kwargs)


def outputs_and_vjp(
    run: Runner, op: str, args: Sequence[Any], wrt: Sequence[int], cotangents: Sequence[Tensor]
) -> Tuple[Tensor, ...]:
    """The outputs of ``run(op, *args)`` and the gradients of ``sum(output * cotangent)`` w.r.t. ``args[wrt]``."""
    args = list(args)
    for i in wrt:
        args[i] = args[i].clone().requires_grad_()
    outputs = run(op, *args)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    inputs = [args[i] for i in wrt]
    if all(x.numel() == 0 for x in inputs):
        grads = tuple(torch.zeros_like(x) for x in inputs)
    else:
        loss = sum((o * c.to(o.device)).sum() for o, c in zip(outputs, cotangents, strict=True))
        grads = torch.autograd.grad(loss, inputs)
    return tuple(o.detach() for o in outputs) + tuple(grads)
