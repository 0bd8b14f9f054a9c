"""nerfstudio's ``InputDataset`` reading its images through :mod:`relight3d.data.validation`.

nerfstudio's own dataset reads each image with PIL into ``uint8``: a 16-bit grey PNG (PIL mode ``I;16``) then keeps
only its low byte, a grey + alpha image fails an assertion, and a palette image becomes palette indices. This dataset
reads every image with :func:`~relight3d.data.validation.read_image_float32` instead (every mode converted to RGB or
RGBA, 16-bit PNGs with all 16 bits, bad files refused with a one-line :class:`DataError`), then applies the
dataparser's scale factor and alpha colour as nerfstudio does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from nerfstudio.data.datasets.base_dataset import InputDataset
from torch import Tensor

from relight3d.data.validation import read_image_float32


class CheckedInputDataset(InputDataset):
    """An ``InputDataset`` whose images are checked and converted by relight3d (16-bit PNGs kept at 16 bits)."""

    def image_array(self, image_idx: int) -> np.ndarray:
        """Image ``image_idx`` as float32 ``[h, w, 3|4]`` in [0, 1], resized by the dataset's scale factor."""
        path = Path(self._dataparser_outputs.image_filenames[image_idx])
        image = read_image_float32(path)
        if self.scale_factor != 1.0:
            import cv2

            h, w = image.shape[:2]
            size = (int(w * self.scale_factor), int(h * self.scale_factor))
            image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
            if image.ndim == 2:
                image = image[..., None]
        return image

    def get_numpy_image(self, image_idx: int) -> np.ndarray:
        """The image as ``uint8`` ``[h, w, 3|4]`` (nerfstudio's contract), rounded from the checked float image."""
        return np.round(self.image_array(image_idx) * 255.0).astype(np.uint8)

    def get_image_float32(self, image_idx: int) -> Float[Tensor, "image_height image_width num_channels"]:
        """The image in [0, 1] at full precision, composited on the dataparser's alpha colour when it has one."""
        image = torch.from_numpy(self.image_array(image_idx))
        alpha_color = self._dataparser_outputs.alpha_color
        if alpha_color is not None and image.shape[-1] == 4:
            image = image[:, :, :3] * image[:, :, -1:] + alpha_color * (1.0 - image[:, :, -1:])
        return image
