"""An in-memory ray datamanager whose training images a pipeline can replace.

All training images are loaded once into one tensor; each step samples random pixels from it. No worker processes
are started (fast on a CPU, and nothing to spawn). Relighting pipelines overwrite training images with
:meth:`InMemoryDataManager.replace_train_images`, which is what Neural Gaffer's refits and instruct-nerf2nerf-style
loops need.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Sequence, Tuple, Type, Union

import torch
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager, VanillaDataManagerConfig
from nerfstudio.data.utils.dataloaders import FixedIndicesEvalDataloader, RandIndicesEvalDataloader
from nerfstudio.model_components.ray_generators import RayGenerator
from torch import Tensor

from relight3d.data.checked_dataset import CheckedInputDataset
from relight3d.data.dataparser_configs import AnnotatedDataParserUnion, dataparser_config
from relight3d.errors import DataError


@dataclass
class InMemoryDataManagerConfig(VanillaDataManagerConfig):
    """Random-ray batches from images held in memory; training images can be replaced by a pipeline."""

    _target: Type = field(default_factory=lambda: InMemoryDataManager)
    """Datamanager class to instantiate."""
    dataparser: AnnotatedDataParserUnion = field(default_factory=dataparser_config)
    """Dataparser that reads the scene: the word after the method name picks it, its options follow it (the
    table is relight3d.data.dataparser_configs.DATAPARSERS)."""
    train_num_rays_per_batch: int = 4096
    """Rays per training batch."""
    eval_num_rays_per_batch: int = 4096
    """Rays per evaluation batch."""


class InMemoryDataManager(VanillaDataManager[CheckedInputDataset]):
    """VanillaDataManager without worker processes, with replaceable training images (read by
    :class:`~relight3d.data.checked_dataset.CheckedInputDataset`: checked, 16-bit PNGs at full precision)."""

    config: InMemoryDataManagerConfig

    def _load_all(self, dataset) -> Dict[str, Tensor]:  # noqa: ANN001
        images = []
        first = None
        for i in range(len(dataset)):
            img = dataset.get_image_float32(i)
            if first is None:
                first = img.shape
            elif img.shape != first:
                raise DataError(
                    dataset._dataparser_outputs.image_filenames[i],
                    f"image has shape {tuple(img.shape)} but the first image has {tuple(first)}",
                )
            images.append(img)
        if not images:
            raise DataError(self.config.data or ".", "empty dataset: no images")
        return {"image": torch.stack(images).to(self.device), "image_idx": torch.arange(len(images))}

    def setup_train(self) -> None:
        assert self.train_dataset is not None
        self.image_batch = self._load_all(self.train_dataset)
        self.train_pixel_sampler = self._get_pixel_sampler(self.train_dataset, self.config.train_num_rays_per_batch)
        self.train_ray_generator = RayGenerator(self.train_dataset.cameras.to(self.device))

    def setup_eval(self) -> None:
        assert self.eval_dataset is not None
        self.eval_image_batch = self._load_all(self.eval_dataset)
        self.eval_pixel_sampler = self._get_pixel_sampler(self.eval_dataset, self.config.eval_num_rays_per_batch)
        self.eval_ray_generator = RayGenerator(self.eval_dataset.cameras.to(self.device))
        self.fixed_indices_eval_dataloader = FixedIndicesEvalDataloader(
            input_dataset=self.eval_dataset, device=self.device, num_workers=0
        )
        self.eval_dataloader = RandIndicesEvalDataloader(
            input_dataset=self.eval_dataset, device=self.device, num_workers=0
        )

    def next_train(self, step: int) -> Tuple[RayBundle, Dict]:
        self.train_count += 1
        batch = self.train_pixel_sampler.sample(self.image_batch)
        return self.train_ray_generator(batch["indices"]), batch

    def next_eval(self, step: int) -> Tuple[RayBundle, Dict]:
        self.eval_count += 1
        batch = self.eval_pixel_sampler.sample(self.eval_image_batch)
        return self.eval_ray_generator(batch["indices"]), batch

    # --- the hook for pipelines ----------------------------------------------------------------------------------
    @property
    def train_images(self) -> Float[Tensor, "n h w c"]:
        """The current training images (after any replacement)."""
        return self.image_batch["image"]

    @property
    def train_cameras(self) -> Cameras:
        """Cameras of the training images."""
        assert self.train_dataset is not None
        return self.train_dataset.cameras

    def replace_train_images(self, indices: Union[Sequence[int], Tensor], images: Float[Tensor, "k h w c"]) -> None:
        """Overwrite training images ``indices`` with ``images`` (same size; RGB or RGBA as loaded).

        If the stored images are RGBA and ``images`` are RGB, the stored alpha (the object mask) is kept.
        """
        idx = torch.as_tensor(indices, dtype=torch.long)
        store = self.image_batch["image"]
        if images.shape[1:3] != store.shape[1:3]:
            got, want = tuple(images.shape[1:3]), tuple(store.shape[1:3])
            raise ValueError(f"replace_train_images: images are {got}, training images {want}")
        if images.shape[0] != idx.shape[0]:
            raise ValueError(f"replace_train_images: {idx.shape[0]} indices but {images.shape[0]} images")
        c = images.shape[-1]
        store[idx, ..., :c] = images.to(store)
