"""The one RGBA image reader: every part of relight3d that reads an image with an object mask calls :func:`read_rgba`.

It is built on :mod:`relight3d.data.validation`'s checked decoding, so a missing, non-regular, mislabelled, truncated
or unsupported file is one :class:`~relight3d.errors.DataError` line naming it, and 16-bit PNGs keep all 16 bits.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Tuple, Union

import numpy as np

from relight3d.data.validation import inspect_image, read_image_float32

if TYPE_CHECKING:  # the Blender side of relight3d_bench reads images here with numpy and Pillow alone
    from jaxtyping import Float


def read_rgba(path: Union[str, Path]) -> Tuple[Float[np.ndarray, "h w 4"], bool]:
    """An image as float32 RGBA in [0, 1] with straight alpha, and whether the file has an alpha channel.

    Grey images are repeated into RGB; an image without alpha gets alpha 1 (and ``has_alpha`` False); 16-bit PNGs
    are read with all 16 bits (``value / 65535``).

    Args:
        path: an image file (PNG, JPEG, BMP, TIFF or WebP; its content must match its suffix).

    Returns:
        ``(rgba, has_alpha)``: ``rgba`` is C-contiguous float32 ``[h, w, 4]``.

    Raises:
        DataError: one line naming the file: missing, not a regular file, empty, wrong format for its suffix, not
            an image, truncated or corrupt, too large, or of an unsupported mode.
    """
    path = Path(path)
    info = inspect_image(path)
    image = read_image_float32(path, info)
    if image.shape[2] == 3:
        image = np.concatenate([image, np.ones_like(image[..., :1])], axis=2)
    return np.ascontiguousarray(image, dtype=np.float32), info.has_alpha
