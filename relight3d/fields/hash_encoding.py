"""Multiresolution hash encoding (Instant-NGP): tinycudann on CUDA when asked for and importable, else the op
:func:`relight3d.ops.hash_encoding` (compiled C++ / CUDA kernels where relight3d._C is built, its torch reference
otherwise).

Both use the same per-level resolutions and the same spatial hash as tinycudann
(``x * 1 ^ y * 2654435761 ^ z * 805459861`` modulo the table size, with dense indexing for levels whose grid fits
in the table), so they behave alike; their parameter layouts differ, so checkpoints are not interchangeable.
"""

from __future__ import annotations

from typing import List, Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from relight3d._optional import tinycudann, warn_once
from relight3d.ops import hash_encoding, hash_grid_layout
from relight3d.ops.hash_encoding import per_level_scale


class HashEncoding(nn.Module):
    """Hash-grid encoding of points in ``[0, 1]^3``.

    Args:
        n_levels: number of resolution levels.
        features_per_level: features stored per level.
        log2_table_size: log2 of the number of entries per level.
        base_resolution: resolution of the coarsest level.
        max_resolution: resolution of the finest level.
        implementation: 'tcnn' (needs tinycudann and a CUDA device), 'torch' (relight3d's op: its compiled kernels,
            else its torch reference), or 'auto' (tinycudann on CUDA when it imports, else relight3d's op).
    """

    def __init__(
        self,
        n_levels: int = 16,
        features_per_level: int = 2,
        log2_table_size: int = 19,
        base_resolution: int = 16,
        max_resolution: int = 2048,
        implementation: Literal["auto", "tcnn", "torch"] = "auto",
    ) -> None:
        super().__init__()
        self.n_levels = n_levels
        self.features_per_level = features_per_level
        self.table_size = 2**log2_table_size
        self.growth = per_level_scale(n_levels, base_resolution, max_resolution)
        self.layout = hash_grid_layout(n_levels, log2_table_size, base_resolution, max_resolution)

        self.tcnn_encoding = None
        want_tcnn = implementation in ("auto", "tcnn")
        tcnn = tinycudann() if want_tcnn else None
        if implementation == "tcnn" and tcnn is None:
            raise ImportError("HashEncoding(implementation='tcnn') needs tinycudann, which is not installed")
        if tcnn is not None and torch.cuda.is_available():
            self.tcnn_encoding = tcnn.Encoding(
                n_input_dims=3,
                encoding_config={
                    "otype": "HashGrid",
                    "n_levels": n_levels,
                    "n_features_per_level": features_per_level,
                    "log2_hashmap_size": log2_table_size,
                    "base_resolution": base_resolution,
                    "per_level_scale": self.growth,
                },
            )
        else:
            if implementation == "auto" and tcnn is None:
                warn_once("tcnn-hash", "relight3d: tinycudann unavailable; using relight3d's hash-grid op")
            rows = self.layout.offsets[-1]
            self.table = nn.Parameter(torch.empty(rows, features_per_level).uniform_(-1e-4, 1e-4))

    @property
    def output_dim(self) -> int:
        return self.n_levels * self.features_per_level

    @property
    def scales(self) -> List[float]:
        """Per level, grid units per unit of position (float32 values)."""
        return list(self.layout.scales)

    @property
    def offsets(self) -> List[int]:
        """The first table row of each level, then the number of rows."""
        return list(self.layout.offsets)

    @property
    def level_sizes(self) -> List[int]:
        """Table rows per level: ``resolution**3`` for dense levels, the table size for hashed ones."""
        return [b - a for a, b in zip(self.layout.offsets[:-1], self.layout.offsets[1:])]

    @property
    def level_dense(self) -> List[bool]:
        """Per level, whether it is indexed densely (its grid fits in the table) rather than hashed."""
        return list(self.layout.dense)

    def forward(self, x: Float[Tensor, "n 3"]) -> Float[Tensor, "n f"]:
        """Encode points in ``[0, 1]^3`` (points outside are clamped)."""
        if self.tcnn_encoding is not None and x.is_cuda:
            return self.tcnn_encoding(x).float()
        return hash_encoding(x, self.table, self.layout)
