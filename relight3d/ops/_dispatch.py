"""What every public op does before it computes: check its inputs, then pick the implementation.

:func:`public_op` checks the tensor arguments of a public function against its jaxtyping annotations before its body
runs, so that a signature's annotations are its input checks:

* every tensor is on the device of the op's first tensor argument (else ValueError: nothing is moved silently);
* ``Float`` tensors are float32, ``UInt8`` ones uint8 and ``Int`` ones of any integer dtype, not bool (else
  TypeError: nothing is cast silently; the compiled kernels widen integers to int64 themselves);
* the shapes match the annotation's dimensions, a named dimension (``"n 3"``) having one size across the arguments
  (else ValueError).

The body then checks what annotations cannot say (e.g. the bitfield's length for the grid's layout) and returns
:func:`run`, which computes the op by the compiled kernels (:mod:`relight3d.ops._wrapper`) when the extension is
loaded for the tensors' device and can (:func:`relight3d.ops._wrapper.can_run`), and by the torch reference
(:mod:`relight3d.ops._torch_impl`) otherwise.
"""

from __future__ import annotations

import functools
import inspect
import typing
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

import torch
from torch import Tensor

from relight3d.ops import _backend, _torch_impl, _wrapper

F = TypeVar("F", bound=Callable[..., Any])

_Spec = Tuple[str, str, List[str]]  # argument name, dtype rule ("float32", "uint8" or "integer"), dimensions


def _tensor_spec(name: str, annotation: Any) -> Optional[_Spec]:
    """The check of one argument from its annotation (None for a non-tensor argument)."""
    args = typing.get_args(annotation)
    if args and type(None) in args:  # Optional[...]
        annotation = next(a for a in args if a is not type(None))
    dtypes = getattr(annotation, "dtypes", None)
    if dtypes is None:
        return None
    rule = "uint8" if tuple(dtypes) == ("uint8",) else "float32" if "float32" in dtypes else "integer"
    return name, rule, annotation.dim_str.split()


def _check_dtype(op: str, name: str, rule: str, t: Tensor) -> None:
    if rule == "integer":
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"{op}: '{name}' must be an integer tensor, got {t.dtype}")
    elif t.dtype != getattr(torch, rule):
        raise TypeError(f"{op}: '{name}' must be {rule}, got {t.dtype}")


def check_shape(op: str, name: str, t: Tensor, dims: Sequence[str], sizes: Dict[str, int]) -> None:
    """Raise unless ``t`` has dimensions ``dims`` (numbers, or names bound in ``sizes`` at their first use)."""
    ok = t.dim() == len(dims)
    for dim, size in zip(dims, t.shape):
        expected = int(dim) if dim.isdigit() else sizes.setdefault(dim, size)
        ok = ok and size == expected
    if not ok:
        expected = ", ".join(str(sizes.get(d, d)) for d in dims)
        raise ValueError(f"{op}: '{name}' must have shape ({expected}), got {tuple(t.shape)}")


def public_op(fn: F) -> F:
    """Check the tensor arguments of the public op ``fn`` against its annotations (module docstring) first."""
    signature = inspect.signature(fn)
    hints = typing.get_type_hints(fn)
    specs = [s for s in (_tensor_spec(n, hints.get(n)) for n in signature.parameters) if s is not None]

    @functools.wraps(fn)
    def checked(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs).arguments
        device: Optional[torch.device] = None
        first = ""
        sizes: Dict[str, int] = {}
        for name, rule, dims in specs:
            t = bound.get(name)
            if t is None:
                continue
            if device is None:
                device, first = t.device, name
            elif t.device != device:
                raise ValueError(
                    f"{fn.__name__}: '{name}' is on {t.device} but '{first}' is on {device}; move it explicitly"
                )
            _check_dtype(fn.__name__, name, rule, t)
            check_shape(fn.__name__, name, t, dims, sizes)
        return fn(*args, **kwargs)

    return typing.cast(F, checked)


def implementation(op: str, args: Sequence[Any]) -> Callable[..., Any]:
    """The function that computes ``op`` on ``args``: the compiled kernels or the torch reference."""
    device = next(x.device for x in args if isinstance(x, Tensor))
    if _backend.active_backend(device.type, op) != "torch" and _wrapper.can_run(op, args):
        return functools.partial(_wrapper.run, op)
    return getattr(_torch_impl, op)


def run(op: str, *args: Any) -> Any:
    """Compute ``op`` on the checked arguments of its public function, passed positionally and all of them."""
    return implementation(op, args)(*args)


def check_grid(op: str, bitfield: Tensor, n_cascades: int, res: int) -> None:
    """Raise unless ``res`` and ``n_cascades`` are a valid grid layout and ``bitfield`` has one bit per cell."""
    if res > _torch_impl.MAX_MORTON_RES or res % 2 or res <= 0:
        raise ValueError(f"{op}: res must be even and in (0, {_torch_impl.MAX_MORTON_RES}], got {res}")
    if not 1 <= n_cascades <= 30:
        raise ValueError(f"{op}: n_cascades must be in [1, 30], got {n_cascades}")
    check_shape(op, "bitfield", bitfield, [str(n_cascades * res**3 // 8)], {})


def check_steps(op: str, dt_min: float, dt_max: float) -> None:
    """Raise unless ``0 < dt_min <= dt_max``."""
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"{op}: need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
