"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric"), v0.1.

The distance between two images is computed from five layers of an ImageNet backbone (AlexNet or VGG-16 from
torchvision): each layer's activations are unit-normalised along the channel axis, the squared difference is weighted
per channel by a learned 1x1 convolution (the "linear heads"), averaged over the image, and the five numbers are
summed. Inputs in [0, 1] are first mapped to [-1, 1] and then shifted and scaled per channel as in the reference code.

Both sets of weights are needed and neither can be downloaded here, so they are looked up on disk:

* the backbone: torchvision's ImageNet checkpoint (``alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth``, or any
  ``alexnet*.pth`` / ``vgg16*.pth``), in ``$RELIGHT3D_LPIPS_WEIGHTS`` or in the torch hub cache
  (``torch.hub.get_dir()/checkpoints``, i.e. ``$TORCH_HOME/hub/checkpoints``, where torchvision saves it);
* the linear heads: ``alex.pth`` / ``vgg.pth`` of the ``lpips`` package (keys ``lin<k>.model.1.weight``), in
  ``$RELIGHT3D_LPIPS_WEIGHTS``, in an installed ``lpips`` package (``lpips/weights/v0.1``) or in an installed
  ``torchmetrics`` (which ships the same files in ``functional/image/lpips_models``).

When either is missing, ``load_lpips`` raises ``LPIPSWeightsNotFound`` and evaluations report
``n/a (no LPIPS weights)``. A network with random weights gives numbers that mean nothing, so the product code never
builds one; only the tests do, to check the computation.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from relight3d.errors import WeightsError, one_line, reading

WEIGHTS_ENV = "RELIGHT3D_LPIPS_WEIGHTS"
NOT_AVAILABLE = "n/a (no LPIPS weights)"


@dataclass(frozen=True)
class _Backbone:
    torchvision_name: str
    """Constructor name in torchvision.models."""
    checkpoint_names: Tuple[str, ...]
    """File names torchvision uses for the ImageNet weights, then globs that also match renamed copies."""
    slice_ends: Tuple[int, ...]
    """Indices into ``features`` after which the five compared activations are taken (exclusive ends)."""
    channels: Tuple[int, ...]
    """Channels of the five activations."""
    min_size: int
    """Smallest image side the five layers accept."""


BACKBONES: Dict[str, _Backbone] = {
    # relu1 .. relu5 of AlexNet's features.
    "alex": _Backbone(
        "alexnet", ("alexnet-owt-7be5be79.pth", "alexnet*.pth"), (2, 5, 8, 10, 12), (64, 192, 384, 256, 256), 31
    ),
    # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 of VGG-16.
    "vgg": _Backbone("vgg16", ("vgg16-397923af.pth", "vgg16*.pth"), (4, 9, 16, 23, 30), (64, 128, 256, 512, 512), 16),
}


class LPIPSWeightsNotFound(FileNotFoundError):
    """The backbone or the linear-head weights of LPIPS are not on this machine."""


@dataclass(frozen=True)
class LPIPSWeights:
    """Where the two parts of one LPIPS network's weights were found."""

    net: str
    """Backbone: "alex" or "vgg"."""
    backbone: Path
    """torchvision ImageNet checkpoint of the backbone."""
    heads: Path
    """The lpips package's linear heads for that backbone."""


def _weight_dirs() -> List[Path]:
    dirs = []
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(Path(torch.hub.get_dir()) / "checkpoints")
    return dirs


def _head_dirs() -> List[Path]:
    dirs = []
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        dirs.append(Path(env).expanduser())
    for package, sub in (("lpips", ("weights", "v0.1")), ("torchmetrics", ("functional", "image", "lpips_models"))):
        spec = importlib.util.find_spec(package)  # locates the package without importing it
        if spec is not None and spec.submodule_search_locations:
            for location in spec.submodule_search_locations:
                dirs.append(Path(location).joinpath(*sub))
    return dirs


def find_lpips_weights(net: str = "alex") -> LPIPSWeights:
    """Locate the backbone and linear-head weights of LPIPS-``net`` (see the module docstring for where).

    Raises:
        LPIPSWeightsNotFound: naming what is missing and the folders searched.
    """
    if net not in BACKBONES:
        raise ValueError(f"unknown LPIPS backbone {net!r}; choose from {sorted(BACKBONES)}")
    spec = BACKBONES[net]
    backbone = heads = None
    searched_backbone, searched_heads = _weight_dirs(), _head_dirs()
    for folder in searched_backbone:
        for pattern in spec.checkpoint_names:
            found = sorted(folder.glob(pattern)) if folder.is_dir() else []
            if found:
                backbone = found[0]
                break
        if backbone is not None:
            break
    for folder in searched_heads:
        if (folder / f"{net}.pth").is_file():
            heads = folder / f"{net}.pth"
            break
    missing = []
    if backbone is None:
        where = ", ".join(str(d) for d in searched_backbone)
        missing.append(f"backbone {spec.checkpoint_names[0]} (looked in {where})")
    if heads is None:
        where = ", ".join(str(d) for d in searched_heads)
        missing.append(f"linear heads {net}.pth (looked in {where})")
    if missing:
        raise LPIPSWeightsNotFound(
            f"{NOT_AVAILABLE}: missing {'; '.join(missing)}. Put the files in a folder and set {WEIGHTS_ENV} to it."
        )
    return LPIPSWeights(net=net, backbone=backbone, heads=heads)


class LPIPS(nn.Module):
    """The LPIPS v0.1 network: a torchvision backbone's five activations compared through linear heads.

    Construct it with ``load_lpips`` (real weights). The constructor alone leaves the weights random, which only a test
    may use.
    """

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        import torchvision

        if net not in BACKBONES:
            raise ValueError(f"unknown LPIPS backbone {net!r}; choose from {sorted(BACKBONES)}")
        self.net = net
        self.spec = BACKBONES[net]
        # Built on the meta device: the classifier half of the torchvision model (tens of millions of parameters)
        # is never allocated; the convolutional features are then materialised on the CPU and initialised.
        with torch.device("meta"):
            features = getattr(torchvision.models, self.spec.torchvision_name)(weights=None).features
        self.features = features.to_empty(device="cpu")
        for module in self.features.modules():
            if isinstance(module, nn.Conv2d):
                module.reset_parameters()
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in self.spec.channels)
        # The reference code's input normalisation, applied after mapping [0, 1] to [-1, 1].
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def load_backbone(self, state: Dict[str, Tensor], source: Path) -> None:
        """Load torchvision's checkpoint of the whole classifier; only its ``features.*`` entries are used."""
        features = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
        try:
            self.features.load_state_dict(features, strict=True)
        except RuntimeError as err:
            problem = f"not a torchvision {self.spec.torchvision_name} checkpoint ({one_line(err)})"
            raise WeightsError(source, problem) from err

    def load_heads(self, state: Dict[str, Tensor], source: Path) -> None:
        """Load the linear heads from the lpips package's format (``lin<k>.model.1.weight``, or ``lin<k>.weight``)."""
        weights = {}
        for key, value in state.items():
            match = re.fullmatch(r"lin(\d+)\.(?:model\.\d+\.)?weight", key)
            if match:
                weights[int(match.group(1))] = value
        expected = [(1, c, 1, 1) for c in self.spec.channels]
        shapes = [tuple(weights[k].shape) if k in weights else None for k in range(len(expected))]
        if shapes != expected:
            raise WeightsError(source, f"not LPIPS-{self.net} linear heads (weights {shapes}, expected {expected})")
        for k, head in enumerate(self.heads):
            head.weight.copy_(weights[k].float())

    def _activations(self, x: Tensor) -> List[Tensor]:
        out, start = [], 0
        h = (2.0 * x - 1.0 - self.shift) / self.scale
        for end in self.spec.slice_ends:
            h = self.features[start:end](h)
            out.append(h)
            start = end
        return out

    def distance_map(
        self, pred: Float[Tensor, "b 3 h w"], gt: Float[Tensor, "b 3 h w"]
    ) -> Tuple[Float[Tensor, " b"], Float[Tensor, "b h w"]]:
        """LPIPS of each pair in the batch, and its per-pixel map.

        The map is the reference code's ``spatial=True`` output: each layer's weighted difference upsampled
        (bilinear) to the input size, summed over layers; its mean is close to, not exactly, the distance.

        Example:
            >>> net = LPIPS("alex")  # random weights: for illustration only
            >>> x = torch.rand(1, 3, 32, 32)
            >>> float(net.distance_map(x, x)[0])
            0.0
        """
        h, w = pred.shape[-2:]
        if min(h, w) < self.spec.min_size:
            raise ValueError(f"LPIPS-{self.net} needs images of at least {self.spec.min_size} px (got {h}x{w})")
        distance = pred.new_zeros(pred.shape[0])
        spatial = pred.new_zeros(pred.shape[0], h, w)
        for head, a, b in zip(self.heads, self._activations(pred.float()), self._activations(gt.float())):
            na = a / (a.square().sum(1, keepdim=True).sqrt() + 1e-10)
            nb = b / (b.square().sum(1, keepdim=True).sqrt() + 1e-10)
            layer = head((na - nb).square())
            distance = distance + layer.mean(dim=(1, 2, 3))
            spatial = spatial + F.interpolate(layer, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        return distance, spatial

    def forward(self, pred: Float[Tensor, "b 3 h w"], gt: Float[Tensor, "b 3 h w"]) -> Float[Tensor, " b"]:
        """LPIPS distance of each pair (images in [0, 1])."""
        return self.distance_map(pred, gt)[0]


def load_lpips(net: str = "alex", device: str = "cpu", weights: Optional[LPIPSWeights] = None) -> LPIPS:
    """LPIPS with its real (pretrained) weights, loaded with ``weights_only=True``.

    Raises:
        LPIPSWeightsNotFound: when the weights are not on this machine (never falls back to random weights).
        WeightsError: when a weight file cannot be read or has the wrong content.
    """
    weights = weights if weights is not None else find_lpips_weights(net)
    model = LPIPS(weights.net)
    model.load_backbone(_load_state_dict(weights.backbone), weights.backbone)
    model.load_heads(_load_state_dict(weights.heads), weights.heads)
    return model.to(device)


def _load_state_dict(path: Path) -> Dict[str, Tensor]:
    with reading(path, "a state dict (torch.load, weights only)", WeightsError):
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise WeightsError(path, f"holds a {type(state).__name__}, not a state dict")
    return state
