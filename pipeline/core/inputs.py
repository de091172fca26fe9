"""What a network reads: the normalisation and the geometry its weights expect.

Every network carries one `InputSpec` (in its checkpoint and its ONNX metadata), and every loader
builds batches for a spec, so a network trained from ImageNet weights is always fed ImageNet's
normalisation at its own input size, in training, evaluation, calibration and deployment alike.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only for annotations: this module stays free of torch at import
    from torch import nn

    from pipeline.core.config import TrainConfig
    from pipeline.data.datasets import Prepared

log = logging.getLogger(__name__)

INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputSpec:
    mean: tuple[float, ...]  # per channel: x = (uint8 / 255 - mean) / std
    std: tuple[float, ...]
    size: tuple[int, int]  # (H, W) of the tensors the network reads
    resize: int = 0  # evaluation: shorter side resized to this, then a centre crop of `size`
    interpolation: str = "bilinear"
    source: str = "dataset"  # where mean and std come from: the data, or pretrained weights

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "size": list(self.size),
            "resize": self.resize,
            "interpolation": self.interpolation,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> InputSpec:
        return cls(
            tuple(raw["mean"]),
            tuple(raw["std"]),
            (int(raw["size"][0]), int(raw["size"][1])),
            int(raw.get("resize", 0)),
            str(raw.get("interpolation", "bilinear")),
            str(raw.get("source", "dataset")),
        )

    def describe(self, raw: bool = False, any_size: bool = False) -> str:
        """The preprocessing in words, for logs, the model card and ONNX metadata; `raw`: for a
        file that reads uint8 images and normalises them itself; `any_size`: one that also
        resizes and crops them itself."""
        mean = ", ".join(f"{m:.4g}" for m in self.mean)
        std = ", ".join(f"{s:.4g}" for s in self.std)
        h, w = self.size
        resize = (
            f"resize the shorter side to {self.resize} ({self.interpolation}), centre-crop "
            if self.resize
            else f"resize to {h}x{w} ({self.interpolation}) if needed, "
        )
        colour = "grey" if len(self.mean) == 1 else "RGB"
        if any_size:
            fitted = f"{resize}{h}x{w}, normalise"
            return f"uint8 (N, H, W, C) {colour} of any size; the graph does: {fitted}"
        if raw:
            return f"{resize}{h}x{w}; uint8 (N, H, W, C) {colour}, normalised in the graph"
        return f"{resize}{h}x{w}; x = (uint8 / 255 - [{mean}]) / [{std}] ({self.source})"


def scale_size(size: int, crop_pct: float) -> int:
    """The side resized to before a centre crop of `size`: floored, as timm's evaluation
    transform does (`math.floor(size / crop_pct)`); the epsilon keeps 224 / (224 / 256) at 256."""
    return math.floor(size / crop_pct + 1e-9)


def run_spec(
    data: Prepared, train: TrainConfig, weights: InputSpec | None, base: InputSpec | None
) -> InputSpec:
    """What the network being trained reads.

    Normalisation: its pretrained weights', else `base` (the teacher's, when distilling), else
    the data's statistics. Size: `train.input_size`, else the teacher's (teacher and student read
    one batch), else the weights' native size, else the prepared images'. Evaluation resizes the
    shorter side and centre-crops when the images are natural (random_resized_crop, or weights
    or a teacher that expect it); pad_crop networks read their images as they are.
    """
    norm = weights or base
    mean, std, source = (
        (norm.mean, norm.std, norm.source) if norm else (data.mean, data.std, "dataset")
    )
    if train.input_size:
        size = (train.input_size, train.input_size)
    elif base is not None:
        size = base.size
    elif weights is not None and weights.size != (0, 0):
        size = weights.size
    else:
        size = tuple(data.image_shape[1:])
    expects_crop = (weights is not None and weights.resize > 0) or (
        base is not None and base.resize > 0
    )
    crop_pct = weights.size[0] / weights.resize if weights and weights.resize else train.crop_pct
    natural = train.augment.kind == "random_resized_crop" or expects_crop
    resize = scale_size(size[0], crop_pct) if natural else 0
    lead = weights if weights is not None and weights.resize else base
    interpolation = lead.interpolation if lead is not None and lead.resize else train.interpolation
    return InputSpec(mean, std, size, resize, interpolation, source)


def renormalise_input(network: nn.Module, given: InputSpec, wanted: InputSpec) -> None:
    """Make `network` (trained on `wanted`'s normalisation) accept batches normalised as `given`:
    an affine map on its input, as a hook on its first module (shared by trunk views)."""
    import torch

    if (given.mean, given.std) == (wanted.mean, wanted.std):
        return
    g_mean, g_std, w_mean, w_std = (
        torch.tensor(v).view(1, -1, 1, 1) for v in (given.mean, given.std, wanted.mean, wanted.std)
    )
    scale, shift = g_std / w_std, (g_mean - w_mean) / w_std

    def hook(_: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x = args[0]
        return (x * scale.to(x) + shift.to(x), *args[1:])

    next(network.children()).register_forward_pre_hook(hook)
    log.info(
        "teacher input renormalised from %s to its own %s statistics", given.source, wanted.source
    )
