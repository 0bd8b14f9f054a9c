"""Pure-PyTorch reference of the multiresolution hash encoding (:func:`relight3d.ops.hash_encoding`).

It takes the arguments of the public op, with the :class:`~relight3d.ops.HashGridLayout` unpacked into its fields
(``scales, resolutions, offsets, dense``), as the compiled kernels take them, and defines the semantics: the C++ and
CUDA kernels (``cuda_ext/csrc/hash_encoding*``) must agree with it. It is the Instant-NGP encoding with
tinycudann's hash and grid convention:

* positions are clamped to ``[0, 1]^3``; at level ``l`` the point sits at ``pos = x * scales[l] + 0.5`` in grid
  units (tinycudann's half-cell offset), in the cell whose corner is ``floor(pos)``, at ``frac = pos - floor(pos)``;
* the 8 corners (corner ``c`` adds bit ``d`` of ``c`` to axis ``d``: x in the lowest bit) are table rows
  ``offsets[l] + i``: on a dense level ``i = x + res * (y + res * z)`` with each coordinate clamped to ``res - 1``
  (``res = resolutions[l]``), on a hashed one ``i = (x * 1 ^ y * 2654435761 ^ z * 805459861) mod size`` with
  ``size = offsets[l + 1] - offsets[l]``;
* the level's features are the trilinear interpolation ``sum_c w_c table[row_c]``, with
  ``w_c = prod_d (frac_d if bit d of c else 1 - frac_d)``; levels are concatenated, level 0 (coarsest) first.

A point with a NaN coordinate has no cell: its features are NaN, and it adds nothing to any gradient (it is encoded
at the origin and its features replaced by NaN, so autograd sends nothing through them).

It also runs in float64 (for ``torch.autograd.gradcheck``); autograd gives every derivative, of any order.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

PRIMES = (1, 2654435761, 805459861)
"""The spatial hash's per-axis multipliers (tinycudann's)."""


def hash_encoding(
    positions: Tensor,
    table: Tensor,
    scales: Sequence[float],
    resolutions: Sequence[int],
    offsets: Sequence[int],
    dense: Sequence[bool],
) -> Tensor:
    """Per level, all 8 corners at once: one gather from the level's rows and trilinear weights (module docstring)."""
    x = positions.clamp(0.0, 1.0)
    nan = x.isnan().any(-1, keepdim=True)
    x = x.masked_fill(nan, 0.0)
    corners = torch.tensor([[(c >> d) & 1 for d in range(3)] for c in range(8)], device=x.device)  # [8, 3]
    is_one = corners.bool()[None]
    n, n_features = x.shape[0], table.shape[1]
    feats = []
    for lvl, scale in enumerate(scales):
        pos = x * scale + 0.5
        cell = pos.floor()
        frac = pos - cell
        idx = cell.long()[:, None, :] + corners[None]  # [n, 8, 3]
        w = torch.where(is_one, frac[:, None, :], 1.0 - frac[:, None, :]).prod(-1)  # [n, 8]
        size = offsets[lvl + 1] - offsets[lvl]
        if dense[lvl]:
            res = resolutions[lvl]
            idx = idx.clamp_max(res - 1)
            flat = idx[..., 0] + res * (idx[..., 1] + res * idx[..., 2])
        else:
            flat = (idx[..., 0] * PRIMES[0]) ^ (idx[..., 1] * PRIMES[1]) ^ (idx[..., 2] * PRIMES[2])
            flat = flat % size
        rows = table[offsets[lvl] : offsets[lvl] + size]
        vals = rows.index_select(0, flat.reshape(-1)).view(n, 8, n_features)
        feats.append((vals * w[..., None]).sum(1))
    if not feats:
        return x.new_zeros(n, 0)
    return torch.cat(feats, dim=-1).masked_fill(nan, float("nan"))
