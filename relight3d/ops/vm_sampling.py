# ruff: noqa: F722, UP037  (jaxtyping shape strings such as "n 3" are not forward references)
"""Sampling of a TensoRF vector-matrix (VM) decomposition: the public op (checks and dispatch by :mod:`._dispatch`).

The compiled kernels (``sample_vm_features_fwd`` / ``_bwd`` in ``cuda_ext/csrc/vm*.cpp``, ``vm_cuda.cu``) compute
the same values as :func:`relight3d.ops._torch_impl.sample_vm_features` (``F.grid_sample``) and the gradients w.r.t.
``planes`` and ``lines``. They have no gradient w.r.t. ``xyz``: when ``xyz`` requires grad (normals from the density
gradient, possibly with ``create_graph=True`` for a loss on them) the op runs the torch reference, whose
``grid_sample`` differentiates w.r.t. the grid too.
"""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor

from relight3d.ops._dispatch import public_op, run


@public_op
def sample_vm_features(
    planes: Float[Tensor, "3 c h w"], lines: Float[Tensor, "3 c l 1"], xyz: Float[Tensor, "n 3"]
) -> Float[Tensor, "n 3c"]:
    """Per-point products plane * line of the three pairs of a VM decomposition, concatenated.

    Pair ``p`` (XY-Z, XZ-Y, YZ-X) samples ``planes[p]`` bilinearly at ``(x, y) = (xyz[:, a], xyz[:, b])`` (width axis
    ``a``, height axis ``b``) and ``lines[p, :, :, 0]`` linearly at ``xyz[:, l]``, with ``((a, b), l)`` =
    ``((0, 1), 2)``, ``((0, 2), 1)``, ``((1, 2), 0)``. Interpolation is ``F.grid_sample``'s with
    ``align_corners=True`` and zeros padding: coordinates ``-1`` and ``1`` are the first and last nodes, and
    outside the box values fade to 0 within one cell.

    Differentiable w.r.t. ``planes`` and ``lines`` by the compiled kernels; w.r.t. ``xyz`` through the torch
    reference, which is used whenever ``xyz`` requires grad. Points with a non-finite coordinate get NaN features
    (as from ``grid_sample``); the compiled kernels give them no gradient.

    Args:
        planes: ``[3, C, H, W]`` plane components.
        lines: ``[3, C, L, 1]`` line components.
        xyz: points normalised to the box, ``[-1, 1]^3`` inside it.

    Returns:
        ``[n, 3 * C]``: column ``p * C + k`` is pair ``p``, component ``k``.

    Example:
        >>> planes = torch.ones(3, 2, 4, 4)
        >>> lines = torch.linspace(0, 3, 4).view(1, 1, 4, 1).repeat(3, 2, 1, 1)  # 0 at -1, 3 at +1 along the line
        >>> sample_vm_features(planes, lines, torch.tensor([[0.0, 0.0, 1.0]]))  # z=1 for pair 0, y=0, x=0
        tensor([[3.0000, 3.0000, 1.5000, 1.5000, 1.5000, 1.5000]])
    """
    if 0 in planes.shape[2:] or lines.shape[2] == 0:
        raise ValueError(f"sample_vm_features: empty planes or lines, {tuple(planes.shape)} and {tuple(lines.shape)}")
    return run("sample_vm_features", planes, lines, xyz)
