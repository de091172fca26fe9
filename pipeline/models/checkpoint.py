"""Self-describing checkpoints: tensors and primitives only, rebuilt through MODELS."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.core.errors import CheckpointError, PipelineError
from pipeline.core.files import load_tensors, save_tensors
from pipeline.core.inputs import InputSpec
from pipeline.models import create_model
from pipeline.models.staged import StagedClassifier

FORMAT = "sokd-checkpoint/1"


@dataclass(frozen=True)
class Checkpoint:
    arch: str
    role: str  # teacher | student | improved_teacher
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]  # (H, W) the network was trained on
    mean: tuple[float, ...]  # input normalisation: (x/255 - mean) / std per channel
    std: tuple[float, ...]
    classes: tuple[str, ...]
    state_dict: dict[str, torch.Tensor]
    params: dict[str, Any]  # the params section that produced it
    metrics: dict[str, float]
    path: Path  # where it was read from, for error messages
    resize: int = 0  # evaluation: shorter side to this, then a centre crop of image_size
    interpolation: str = "bilinear"
    normalisation: str = "dataset"  # where mean and std come from
    curve: tuple[float, ...] = ()  # validation top-1 after each training epoch

    @property
    def spec(self) -> InputSpec:
        """What this network reads: its normalisation and geometry."""
        return InputSpec(
            self.mean,
            self.std,
            self.image_size,
            self.resize,
            self.interpolation,
            self.normalisation,
        )

    def build(self) -> StagedClassifier:
        """Rebuild the network through the registry and load the weights, in eval mode."""
        try:
            model = create_model(self.arch, self.num_classes, self.in_channels)
        except PipelineError as err:  # an architecture this version does not know
            raise CheckpointError(f"{self.path}: {err}") from None
        misfit = _misfit(model.state_dict(), self.state_dict)
        if misfit:
            raise CheckpointError(
                f"{self.path}: weights do not fit architecture {self.arch!r}: {misfit}; the "
                f"file's arch was edited or its weights are another network's"
            )
        model.load_state_dict(self.state_dict)
        return model.eval()


def _misfit(expected: dict[str, Any], given: dict[str, Any], shown: int = 3) -> str:
    """Which keys a state dict lacks, adds or holds in another shape: counts and the first few."""
    missing = [k for k in expected if k not in given]
    extra = [k for k in given if k not in expected]
    reshaped = [
        f"{k} {list(given[k].shape)} vs {list(expected[k].shape)}"
        for k in expected
        if k in given and getattr(given[k], "shape", None) != expected[k].shape
    ]
    parts = [
        f"{len(keys)} {what} ({', '.join(keys[:shown])}{', ...' if len(keys) > shown else ''})"
        for what, keys in (("missing", missing), ("unexpected", extra), ("reshaped", reshaped))
        if keys
    ]
    return "; ".join(parts)


def save_checkpoint(
    path: Path,
    model: nn.Module,
    *,
    arch: str,
    role: str,
    data: Any,
    params: dict[str, Any],
    metrics: dict[str, float],
    spec: InputSpec | None = None,
    curve: Sequence[float] = (),
) -> None:
    """Write `model`'s weights with everything needed to rebuild and feed it, atomically.

    `spec` is what the network reads (default: the data's own statistics at its stored size).
    """
    spec = spec or data.input_spec()
    height, width = spec.size
    payload = {
        "format": FORMAT,
        "arch": arch,
        "role": role,
        "num_classes": data.num_classes,
        "in_channels": data.image_shape[0],
        "image_size": [height, width],
        "mean": list(spec.mean),
        "std": list(spec.std),
        "resize": spec.resize,
        "interpolation": spec.interpolation,
        "normalisation": spec.source,
        "classes": list(data.classes),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "params": params,
        "metrics": metrics,
        "curve": [float(v) for v in curve],
    }
    save_tensors(path, payload)


def load_checkpoint(path: Path | str) -> Checkpoint:
    """Read a checkpoint without unpickling code (weights_only); fail in one line if unusable."""
    path = Path(path)
    raw = load_tensors(path, CheckpointError, "checkpoint", "rerun the stage that wrote it")
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} checkpoint written by this pipeline")
    try:
        ckpt = Checkpoint(
            arch=raw["arch"],
            role=raw["role"],
            num_classes=raw["num_classes"],
            in_channels=raw["in_channels"],
            image_size=tuple(raw["image_size"]),
            mean=tuple(raw["mean"]),
            std=tuple(raw["std"]),
            classes=tuple(raw["classes"]),
            state_dict=raw["state_dict"],
            params=raw["params"],
            metrics=raw["metrics"],
            path=path,
            resize=int(raw.get("resize", 0)),
            interpolation=str(raw.get("interpolation", "bilinear")),
            normalisation=str(raw.get("normalisation", "dataset")),
            curve=tuple(float(v) for v in raw.get("curve", ())),
        )
    except KeyError as err:
        raise CheckpointError(
            f"{path} lacks the field {err}; rerun the stage that wrote it"
        ) from None
    return ckpt
