# ruff: noqa: F722, UP037  (jaxtyping shape strings such as "n 3" are not forward references)
"""The multiresolution hash encoding of Instant-NGP: the public op (checks and dispatch by :mod:`._dispatch`).

:class:`HashGridLayout` says where each level's rows sit in the one ``[rows, F]`` parameter table;
:func:`hash_grid_layout` builds it from the usual settings (levels, table size, coarsest and finest resolution) as
tinycudann does. The reference (:mod:`._torch_hash`) defines the encoding; the compiled kernels
(``hash_encoding_fwd`` / ``_bwd`` / ``_bwd_bwd`` in ``cuda_ext/csrc/hash_encoding*``) compute the same values, the
gradients w.r.t. the table and the positions, and the second derivatives that autograd normals trained through
(``create_graph=True``) need.
"""

from __future__ import annotations

import math
import struct
from typing import NamedTuple, Tuple

from jaxtyping import Float
from torch import Tensor

from relight3d.ops._dispatch import public_op, run

MAX_LEVELS = 32
"""Most levels the compiled kernels take (their per-level constants are a fixed-size kernel argument)."""


class HashGridLayout(NamedTuple):
    """The levels of a hash grid: their grids and where their rows sit in the parameter table.

    Example:
        >>> layout = hash_grid_layout(n_levels=2, log2_table_size=8, base_resolution=4, max_resolution=64)
        >>> layout.resolutions, layout.offsets, layout.dense
        ((4, 64), (0, 64, 320), (True, False))
    """

    scales: Tuple[float, ...]
    """Per level, grid units per unit of position (float32 values): the point ``x`` sits at ``x * scale + 0.5``."""
    resolutions: Tuple[int, ...]
    """Per level, nodes per axis of its grid, ``ceil(scale) + 1`` (of the scale before rounding to float32): dense
    levels clamp corner coordinates to ``resolution - 1``."""
    offsets: Tuple[int, ...]
    """The first table row of each level, then the number of rows of the table."""
    dense: Tuple[bool, ...]
    """Per level, whether its rows are indexed densely (its ``resolution**3`` nodes fit in the table) rather than by
    the spatial hash."""


def _float32(value: float) -> float:
    """``value`` rounded to the nearest float32 (as ``torch.tensor(value, dtype=torch.float32)`` stores it)."""
    return struct.unpack("f", struct.pack("f", value))[0]


def per_level_scale(n_levels: int, base_resolution: int, max_resolution: int) -> float:
    """The growth of the resolution from one level to the next (tinycudann's ``per_level_scale``), such that
    ``n_levels`` levels run from ``base_resolution`` to ``max_resolution``."""
    return math.exp((math.log(max_resolution) - math.log(base_resolution)) / max(n_levels - 1, 1))


def hash_grid_layout(n_levels: int, log2_table_size: int, base_resolution: int, max_resolution: int) -> HashGridLayout:
    """tinycudann's levels: resolutions growing geometrically from ``base_resolution`` to ``max_resolution``
    (``scale = base * growth**l - 1``), at most ``2**log2_table_size`` rows each; a level whose grid has fewer nodes
    than that is dense, with one row per node."""
    if not 1 <= n_levels <= MAX_LEVELS or not 1 <= log2_table_size <= 30 or not 2 <= base_resolution <= max_resolution:
        raise ValueError(
            f"hash_grid_layout: need 1 <= n_levels <= {MAX_LEVELS}, 1 <= log2_table_size <= 30 and "
            f"2 <= base_resolution <= max_resolution, got {n_levels}, {log2_table_size}, {base_resolution}, "
            f"{max_resolution}"
        )
    table_size = 2**log2_table_size
    growth = per_level_scale(n_levels, base_resolution, max_resolution)
    exact = [base_resolution * growth**lvl - 1.0 for lvl in range(n_levels)]
    resolutions = tuple(int(math.ceil(s)) + 1 for s in exact)
    dense = tuple(r**3 < table_size for r in resolutions)
    offsets = [0]
    for r, d in zip(resolutions, dense):
        offsets.append(offsets[-1] + (r**3 if d else table_size))
    return HashGridLayout(tuple(_float32(s) for s in exact), resolutions, tuple(offsets), dense)


def check_layout(layout: HashGridLayout, n_rows: int) -> None:
    """Raise ValueError unless ``layout`` is consistent and its levels fill a table of ``n_rows`` rows: dense
    levels take ``resolution**3`` rows, hashed ones a power of two (the kernels hash in 32 bits)."""
    levels = len(layout.scales)
    problem = ""
    if not 1 <= levels <= MAX_LEVELS or {len(layout.resolutions), len(layout.dense), len(layout.offsets) - 1} != {
        levels
    }:
        problem = f"1 to {MAX_LEVELS} levels, with one scale, resolution and dense flag each and levels + 1 offsets"
    elif layout.offsets[0] != 0 or layout.offsets[-1] != n_rows:
        problem = f"offsets from 0 to the table's {n_rows} rows, got {layout.offsets[0]} to {layout.offsets[-1]}"
    for lvl in range(levels if not problem else 0):
        scale, res, size = layout.scales[lvl], layout.resolutions[lvl], layout.offsets[lvl + 1] - layout.offsets[lvl]
        if not (0 < scale < 2**24 and res >= 1):
            problem = f"level {lvl}: 0 < scale < 2^24 and a positive resolution, got {scale} and {res}"
        elif layout.dense[lvl] and (size != res**3 or size >= 2**32):
            problem = f"level {lvl} is dense: {res}^3 rows (fewer than 2^32), got {size}"
        elif not layout.dense[lvl] and (size <= 0 or size & (size - 1) or size > 2**32):
            problem = f"level {lvl} is hashed: a power of two (at most 2^32) of rows, got {size}"
        if problem:
            break
    if problem:
        raise ValueError(f"hash_encoding: the layout needs {problem}")


@public_op
def hash_encoding(
    positions: Float[Tensor, "n 3"], table: Float[Tensor, "rows f"], layout: HashGridLayout
) -> Float[Tensor, "n lf"]:
    """Multiresolution hash encoding of points in ``[0, 1]^3`` (outside points are clamped to the box).

    At each level the point's cell is found in that level's grid; its 8 corners index table rows (densely on coarse
    levels, by tinycudann's spatial hash on fine ones) and their features are interpolated trilinearly. The exact
    definition is the reference's (:mod:`relight3d.ops._torch_hash`).

    Differentiable w.r.t. ``table`` and ``positions`` (zero along an axis where the coordinate is not strictly inside
    ``(0, 1)``, as ``torch.clamp``'s gradient), twice by the compiled kernels: the gradient w.r.t. the positions
    (normals) can itself be differentiated w.r.t. the table, the positions and the incoming gradient. A point with a
    NaN coordinate gets NaN features and adds nothing to the gradients.

    Args:
        positions: points, ``[0, 1]^3`` inside the grid.
        table: ``[rows, F]`` parameters, ``layout.offsets[-1]`` rows.
        layout: the levels (:func:`hash_grid_layout`).

    Returns:
        ``[n, levels * F]``: column ``l * F + k`` is feature ``k`` of level ``l`` (coarsest first).

    Example:
        >>> layout = hash_grid_layout(n_levels=2, log2_table_size=8, base_resolution=4, max_resolution=64)
        >>> table = torch.arange(320.0)[:, None].repeat(1, 2)  # row r holds (r, r)
        >>> hash_encoding(torch.tensor([[0.0, 0.0, 0.0]]), table, layout)
        tensor([[ 10.5000,  10.5000, 154.5000, 154.5000]])

        At the origin every level's point sits mid-cell (``pos = 0.5``), so each feature is the mean of its cell's 8
        corner rows: on the dense level 0 (4^3 nodes) rows ``x + 4y + 16z`` for x, y, z in {0, 1}, mean 10.5; on the
        hashed level 1 (256 rows from row 64) rows ``64 + (x ^ 2654435761 y ^ 805459861 z) mod 256``, that is
        64 + {0, 1, 177, 176, 149, 148, 36, 37}, mean 154.5.
    """
    check_layout(layout, table.shape[0])
    return run("hash_encoding", positions, table, *layout)
