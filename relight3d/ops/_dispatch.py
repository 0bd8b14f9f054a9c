"""What every public op does before it computes: check its inputs, then pick the implementation.

:func:`public_op` checks the tensor arguments of a public function against its jaxtyping annotations before its body
runs, so that a signature's annotations are its input checks. The tensor fields of an argument annotated with a
NamedTuple class (:class:`~relight3d.ops.march_inputs.PackedOccupancy`) are checked the same way, named
``"grid.bitfield"``, after a check that the argument is of that class (else TypeError):

* every tensor is on the device of the op's first tensor argument (else ValueError: nothing is moved silently);
* ``Float`` tensors are float32, ``UInt8`` ones uint8 and ``Int`` ones of any integer dtype, not bool (else
  TypeError: nothing is cast silently; the compiled kernels widen integers to int64 themselves);
* the shapes match the annotation's dimensions, a named dimension (``"n 3"``) having one size across the arguments
  and fields (else ValueError).

The body then checks what annotations cannot say (e.g. the bitfield's length for the grid's layout) and returns
:func:`run`, which computes the op by the compiled kernels (:mod:`relight3d.ops._wrapper`) when the extension is
loaded for the tensors' device and can (:func:`relight3d.ops._wrapper.can_run`), and by the torch reference
(:mod:`relight3d.ops._torch_impl`, :mod:`relight3d.ops._torch_hash` for the hash encoding) otherwise.
"""

from __future__ import annotations

import functools
import inspect
import typing
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

import torch
from torch import Tensor

from relight3d.ops import _backend, _torch_hash, _torch_impl, _wrapper
from relight3d.ops.march_inputs import PackedOccupancy, StepSchedule

F = TypeVar("F", bound=Callable[..., Any])

_Spec = Tuple[str, str, List[str]]  # tensor ("rays_o", or "grid.bitfield" for a field), dtype rule, dimensions


def _unwrap_optional(annotation: Any) -> Any:
    args = typing.get_args(annotation)
    if args and type(None) in args:  # Optional[...]
        return next(a for a in args if a is not type(None))
    return annotation


def _record_class(annotation: Any) -> Optional[type]:
    """The NamedTuple class of an argument annotated with one (possibly Optional), else None."""
    annotation = _unwrap_optional(annotation)
    is_record = isinstance(annotation, type) and issubclass(annotation, tuple) and hasattr(annotation, "_fields")
    return annotation if is_record else None


def _tensor_spec(annotation: Any) -> Optional[Tuple[str, List[str]]]:
    """The dtype rule ("float32", "uint8" or "integer") and dimensions of a tensor annotation (None for others)."""
    annotation = _unwrap_optional(annotation)
    dtypes = getattr(annotation, "dtypes", None)
    if dtypes is None:
        return None
    rule = "uint8" if tuple(dtypes) == ("uint8",) else "float32" if "float32" in dtypes else "integer"
    return rule, annotation.dim_str.split()


def _specs(name: str, annotation: Any) -> List[_Spec]:
    """The checks of the tensors of one argument: itself, or the tensor fields of a NamedTuple argument."""
    record = _record_class(annotation)
    if record is None:
        spec = _tensor_spec(annotation)
        return [] if spec is None else [(name, *spec)]
    hints = typing.get_type_hints(record)
    fields = ((field, _tensor_spec(hints[field])) for field in record._fields)
    return [(f"{name}.{field}", *spec) for field, spec in fields if spec is not None]


def _tensor(arguments: Dict[str, Any], path: str) -> Optional[Tensor]:
    """The tensor at ``path`` ("rays_o" or "grid.bitfield") of the bound arguments, None where it is not given."""
    name, _, field = path.partition(".")
    value = arguments.get(name)
    return getattr(value, field) if field and value is not None else value


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
    op = fn.__name__
    signature = inspect.signature(fn)
    hints = typing.get_type_hints(fn)
    records = {n: r for n in signature.parameters if (r := _record_class(hints.get(n))) is not None}
    specs = [s for n in signature.parameters for s in _specs(n, hints.get(n))]

    @functools.wraps(fn)
    def checked(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs).arguments
        for name, record in records.items():
            if bound.get(name) is not None and not isinstance(bound[name], record):
                raise TypeError(f"{op}: '{name}' must be a {record.__name__}, got {type(bound[name]).__name__}")
        device: Optional[torch.device] = None
        first = ""
        sizes: Dict[str, int] = {}
        for path, rule, dims in specs:
            t = _tensor(bound, path)
            if t is None:
                continue
            if device is None:
                device, first = t.device, path
            elif t.device != device:
                raise ValueError(f"{op}: '{path}' is on {t.device} but '{first}' is on {device}; move it explicitly")
            _check_dtype(op, path, rule, t)
            check_shape(op, path, t, dims, sizes)
        return fn(*args, **kwargs)

    return typing.cast(F, checked)


def reference(op: str) -> Callable[..., Any]:
    """The torch reference of ``op``: :mod:`._torch_impl`'s function, or :mod:`._torch_hash`'s for the hash encoding."""
    return getattr(_torch_hash if op == "hash_encoding" else _torch_impl, op)


def implementation(op: str, args: Sequence[Any]) -> Callable[..., Any]:
    """The function that computes ``op`` on ``args``: the compiled kernels or the torch reference."""
    device = next(x.device for x in args if isinstance(x, Tensor))
    if _backend.active_backend(device.type, op) != "torch" and _wrapper.can_run(op, args):
        return functools.partial(_wrapper.run, op)
    return reference(op)


def run(op: str, *args: Any) -> Any:
    """Compute ``op`` on the checked arguments of its public function, passed positionally and all of them, with
    :class:`~relight3d.ops.PackedOccupancy` and :class:`~relight3d.ops.StepSchedule` unpacked (``*grid, *steps``)."""
    return implementation(op, args)(*args)


def check_grid(op: str, grid: PackedOccupancy) -> None:
    """Raise unless ``grid.res`` and ``grid.n_cascades`` are a valid layout and the bitfield has one bit per cell."""
    if grid.res > _torch_impl.MAX_MORTON_RES or grid.res % 2 or grid.res <= 0:
        raise ValueError(f"{op}: res must be even and in (0, {_torch_impl.MAX_MORTON_RES}], got {grid.res}")
    if not 1 <= grid.n_cascades <= 30:
        raise ValueError(f"{op}: n_cascades must be in [1, 30], got {grid.n_cascades}")
    check_shape(op, "grid.bitfield", grid.bitfield, [str(grid.n_cascades * grid.res**3 // 8)], {})


def check_steps(op: str, steps: StepSchedule) -> None:
    """Raise unless ``0 < dt_min <= dt_max``."""
    if not 0 < steps.dt_min <= steps.dt_max:
        raise ValueError(f"{op}: need 0 < dt_min <= dt_max, got {steps.dt_min}, {steps.dt_max}")
