"""What a network reads: the normalisation and the geometry its weights expect.

Every network carries one `InputSpec` (in its checkpoint and its ONNX metadata), and every loader
builds batches for a spec, so a network trained from ImageNet weights is always fed ImageNet's
normalisation at its own input size, in training, evaluation, calibration and deployment alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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

    def describe(self) -> str:
        """The preprocessing in words, for logs, the model card and ONNX metadata."""
        mean = ", ".join(f"{m:.4g}" for m in self.mean)
        std = ", ".join(f"{s:.4g}" for s in self.std)
        h, w = self.size
        resize = (
            f"resize the shorter side to {self.resize} ({self.interpolation}), centre-crop "
            if self.resize
            else f"resize to {h}x{w} ({self.interpolation}) if needed, "
        )
        return f"{resize}{h}x{w}; x = (uint8 / 255 - [{mean}]) / [{std}] ({self.source})"
