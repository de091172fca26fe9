"""One call to load a deployable student with its preprocessing, from a checkpoint or ONNX file.

    from pipeline.deploy import load_student
    student = load_student("models/student.int8.onnx")   # or .onnx, or a student.pt checkpoint
    logits = student.logits(images)                      # uint8 images, (N, C, H, W)
    labels = student.predict(images)                     # class names

The preprocessing (mean, std, input shape, class names) is read from the file itself: the ONNX
metadata `export` writes, or the checkpoint's own fields.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import CheckpointError


@dataclass(frozen=True)
class Student:
    """A deployable classifier and exactly the preprocessing it was trained with."""

    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per channel: x = (uint8 / 255 - mean) / std
    std: tuple[float, ...]
    input_shape: tuple[int, int, int]  # (C, H, W)
    run: Callable[[np.ndarray], np.ndarray]  # float32 (N, C, H, W) -> logits (N, K)

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (N, C, H, W) -> the normalised float32 batch the network reads."""
        images = np.asarray(images)
        if images.ndim != 4 or tuple(images.shape[1:]) != self.input_shape:
            raise ValueError(
                f"expected uint8 images of shape (N, {', '.join(map(str, self.input_shape))}), "
                f"got {images.shape}; resize to the student's input size first"
            )
        mean = np.asarray(self.mean, np.float32)[:, None, None]
        std = np.asarray(self.std, np.float32)[:, None, None]
        return ((images.astype(np.float32) / 255 - mean) / std).astype(np.float32)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Logits (N, K) for uint8 images (N, C, H, W)."""
        return self.run(self.preprocess(images))

    def predict(self, images: np.ndarray) -> list[str]:
        """The predicted class name of each image."""
        return [self.classes[i] for i in self.logits(images).argmax(1)]


def _from_checkpoint(path: Path) -> Student:
    import torch

    from pipeline.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    model = ckpt.build().float().eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    shape = (ckpt.in_channels, *ckpt.image_size)
    return Student(ckpt.classes, ckpt.mean, ckpt.std, shape, run)


def _from_onnx(path: Path, threads: int) -> Student:
    from pipeline.verification import open_session

    session = open_session(path, threads)
    meta = dict(session.get_modelmeta().custom_metadata_map)
    missing = [k for k in ("classes", "mean", "std") if k not in meta]
    if missing:
        raise CheckpointError(
            f"{path} carries no {', '.join(missing)} metadata; export it with `sokd export`"
        )
    inputs = session.get_inputs()[0]
    shape = tuple(int(d) for d in inputs.shape[1:])

    def run(x: np.ndarray) -> np.ndarray:
        return session.run(None, {inputs.name: x})[0]

    mean, std = (tuple(json.loads(meta[k])) for k in ("mean", "std"))
    return Student(tuple(json.loads(meta["classes"])), mean, std, shape, run)


def load_student(path: Path | str, threads: int = 1) -> Student:
    """A student from `path`: an ONNX file (fp32 or INT8, run by onnxruntime on the CPU with
    `threads` threads) or a `sokd-checkpoint/1` .pt file (run by torch on the CPU)."""
    path = Path(path)
    if path.suffix == ".onnx":
        return _from_onnx(path, threads)
    return _from_checkpoint(path)
