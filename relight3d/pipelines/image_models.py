"""The two optional models of ``relight3d data from-images``, loaded from local folders with transformers.

* **Foreground masks** (:func:`load_segmenter`, :func:`segment_foreground`): a semantic-segmentation model saved with
  ``save_pretrained``, loaded with ``transformers.AutoModelForSemanticSegmentation`` and its
  ``AutoImageProcessor`` (e.g. a SegFormer, ``SegformerForSemanticSegmentation``). The logits are resized to the
  image (bilinear) and each pixel takes its most likely label; the foreground is every label in
  ``foreground_labels`` (ids or names from the model's ``id2label``), or, when that is empty, every label but 0
  (the background class of salient-object and matting models).
* **Lighting quality** (:func:`load_clip`, :func:`lighting_quality_scores`): a CLIP model (``CLIPModel`` +
  ``CLIPProcessor``). The score of an image is CLIP's zero-shot probability of the "good" prompts against the
  "bad" ones: the softmax of its image-text logits over all prompts, summed over the good prompts, in float64.

Only local folders are read (``local_files_only``) and no code from them is run (``trust_remote_code`` stays off);
a folder that does not load is one :class:`~relight3d.errors.WeightsError` line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Sequence, Set, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from relight3d.errors import ConfigError, WeightsError, reading


@dataclass
class LoadedModel:
    """A transformers model in eval mode and its processor."""

    model: Any
    """The ``PreTrainedModel``."""
    processor: Any
    """Its image processor (segmentation) or ``CLIPProcessor``."""
    device: str
    """Where the model runs."""


def _to_pil(image: Float[Tensor, "h w 3"]) -> Any:
    from PIL import Image

    return Image.fromarray((image.clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype("uint8"))


def load_segmenter(folder: Union[str, Path], device: str = "cpu") -> LoadedModel:
    """A semantic-segmentation model and its image processor from a local folder.

    Raises:
        WeightsError: the folder is missing or does not hold a loadable model and ``preprocessor_config.json``.
    """
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    folder = Path(folder)
    if not folder.is_dir():
        raise WeightsError(folder, "no such model folder (a save_pretrained folder of a segmentation model)")
    with reading(folder, "a semantic-segmentation model (AutoModelForSemanticSegmentation)", WeightsError):
        model = AutoModelForSemanticSegmentation.from_pretrained(folder, local_files_only=True)
        processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    return LoadedModel(model.eval().to(device), processor, device)


def foreground_label_ids(model: Any, foreground_labels: Sequence[str]) -> Set[int]:
    """Label ids from ids or names of ``model.config.id2label``; empty -> every label but 0.

    Raises:
        ConfigError: ``--foreground-labels`` names a label the model does not have.
    """
    id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
    if not foreground_labels:
        return set(id2label) - {0}
    by_name = {v.lower(): k for k, v in id2label.items()}
    found = set()
    for label in foreground_labels:
        text = str(label).strip()
        if text.isdigit() and int(text) in id2label:
            found.add(int(text))
        elif text.lower() in by_name:
            found.add(by_name[text.lower()])
        else:
            known = ", ".join(f"{k}={v}" for k, v in sorted(id2label.items())[:20])
            raise ConfigError("--foreground-labels", f"the model has no label {text!r} (its labels: {known})")
    return found


@torch.no_grad()
def segment_foreground(
    segmenter: LoadedModel, image: Float[Tensor, "h w 3"], foreground_labels: Sequence[str] = ()
) -> Float[Tensor, "h w"]:
    """A 0/1 mask of the pixels whose most likely label is a foreground label (module docstring); ``image`` sRGB."""
    height, width, _ = image.shape
    inputs = segmenter.processor(images=_to_pil(image), return_tensors="pt")
    pixel_values = inputs["pixel_values"].to(segmenter.device)
    logits = segmenter.model(pixel_values=pixel_values).logits.float()
    logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
    labels = logits.argmax(dim=1)[0].cpu()
    keep = torch.tensor(sorted(foreground_label_ids(segmenter.model, foreground_labels)), dtype=labels.dtype)
    return torch.isin(labels, keep).float()


def load_clip(folder: Union[str, Path], device: str = "cpu") -> LoadedModel:
    """A ``CLIPModel`` and its ``CLIPProcessor`` (tokenizer + image processor) from a local folder.

    Raises:
        WeightsError: the folder is missing or does not hold a loadable CLIP model and processor.
    """
    from transformers import CLIPModel, CLIPProcessor

    folder = Path(folder)
    if not folder.is_dir():
        raise WeightsError(folder, "no such model folder (a save_pretrained folder of a CLIP model and processor)")
    with reading(folder, "a CLIP model and processor (CLIPModel, CLIPProcessor)", WeightsError):
        model = CLIPModel.from_pretrained(folder, local_files_only=True)
        processor = CLIPProcessor.from_pretrained(folder, local_files_only=True)
    return LoadedModel(model.eval().to(device), processor, device)


@torch.no_grad()
def lighting_quality_scores(
    clip: LoadedModel,
    images: Sequence[Float[Tensor, "h w 3"]],
    good_prompts: Sequence[str],
    bad_prompts: Sequence[str],
) -> List[float]:
    """Per image (sRGB in [0, 1]), the probability in [0, 1] that CLIP gives the good prompts (module docstring)."""
    prompts = [*good_prompts, *bad_prompts]
    inputs = clip.processor(
        text=prompts, images=[_to_pil(im) for im in images], return_tensors="pt", padding=True, truncation=True
    )
    inputs = {k: v.to(clip.device) for k, v in inputs.items()}
    logits = clip.model(**inputs).logits_per_image.double()
    return [float(p) for p in logits.softmax(dim=-1)[:, : len(good_prompts)].sum(dim=-1).cpu()]


__all__ = [
    "LoadedModel",
    "foreground_label_ids",
    "lighting_quality_scores",
    "load_clip",
    "load_segmenter",
    "segment_foreground",
]
