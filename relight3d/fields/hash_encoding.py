"""Multiresolution hash encoding (Instant-NGP): tinycudann on CUDA when it imports, else pure torch.

The torch version uses the same per-level resolutions and the same spatial hash as tinycudann
(``x * 1 ^ y * 2654435761 ^ z * 805459861`` modulo the table size, with dense indexing for levels whose grid fits
in the table), so the two behave alike; their parameter layouts differ, so checkpoints are not interchangeable.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from relight3d._optional import tinycudann, warn_once

_PRIMES = (1, 2654435761, 805459861)


class HashEncoding(nn.Module):
    """Hash-grid encoding of points in ``[0, 1]^3``.

    Args:
        n_levels: number of resolution levels.
        features_per_level: features stored per level.
        log2_table_size: log2 of the number of entries per level.
        base_resolution: resolution of the coarsest level.
        max_resolution: resolution of the finest level.
        implementation: 'tcnn' (needs tinycudann and a CUDA device), 'torch', or 'auto'.
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
        self.growth = math.exp((math.log(max_resolution) - math.log(base_resolution)) / max(n_levels - 1, 1))
        scales = [base_resolution * self.growth**lvl - 1.0 for lvl in range(n_levels)]
        self.register_buffer("scales", torch.tensor(scales, dtype=torch.float32), persistent=False)
        # Entries used by each level: dense grids that fit take (res+1)^3, others the full table.
        sizes = []
        for s in scales:
            res = int(math.ceil(s)) + 1
            sizes.append(min(res**3, self.table_size))
        self.level_sizes = sizes
        self.level_dense = [res_s < self.table_size for res_s in sizes]
        self.level_res = [int(math.ceil(s)) + 1 for s in scales]
        offsets = [0]
        for n in sizes:
            offsets.append(offsets[-1] + n)
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.long), persistent=False)
        self.register_buffer("level_res_t", torch.tensor(self.level_res, dtype=torch.long), persistent=False)
        self.register_buffer("level_sizes_t", torch.tensor(self.level_sizes, dtype=torch.long), persistent=False)
        self.register_buffer("level_dense_t", torch.tensor(self.level_dense), persistent=False)
        bits = [[(c >> d) & 1 for d in range(3)] for c in range(8)]
        self.register_buffer("corners", torch.tensor(bits, dtype=torch.long), persistent=False)

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
                warn_once("tcnn-hash", "relight3d: tinycudann unavailable; using the pure-torch hash grid")
            self.table = nn.Parameter(torch.empty(offsets[-1], features_per_level).uniform_(-1e-4, 1e-4))

    @property
    def output_dim(self) -> int:
        return self.n_levels * self.features_per_level

    def forward(self, x: Float[Tensor, "n 3"]) -> Float[Tensor, "n f"]:
        """Encode points in ``[0, 1]^3`` (points outside are clamped)."""
        if self.tcnn_encoding is not None and x.is_cuda:
            return self.tcnn_encoding(x).float()
        return self._torch_forward(x.clamp(0.0, 1.0))

    def _torch_forward(self, x: Tensor) -> Tensor:
        """Per level, all 8 corners at once: one gather from the level's table and trilinear weights."""
        corners = self.corners  # [8, 3] in {0, 1}
        is_one = corners.bool()[None]
        feats = []
        for lvl in range(self.n_levels):
            pos = x * self.scales[lvl] + 0.5  # tinycudann's convention
            cell = pos.floor()
            frac = pos - cell
            idx = cell.long()[:, None, :] + corners[None]  # [n, 8, 3]
            w = torch.where(is_one, frac[:, None, :], 1.0 - frac[:, None, :]).prod(-1)  # [n, 8]
            if self.level_dense[lvl]:
                res = self.level_res[lvl]
                idx = idx.clamp_max(res - 1)
                flat = idx[..., 0] + res * (idx[..., 1] + res * idx[..., 2])
            else:
                flat = (idx[..., 0] * _PRIMES[0]) ^ (idx[..., 1] * _PRIMES[1]) ^ (idx[..., 2] * _PRIMES[2])
                flat = flat % self.level_sizes[lvl]
            start = int(self.offsets[lvl])
            table = self.table[start : start + self.level_sizes[lvl]]
            vals = table.index_select(0, flat.reshape(-1)).view(x.shape[0], 8, self.features_per_level)
            feats.append((vals * w[..., None]).sum(1))
        return torch.cat(feats, dim=-1)
