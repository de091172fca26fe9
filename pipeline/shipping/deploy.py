"""One call to load a deployable student with its preprocessing, from a checkpoint or ONNX file.

    from pipeline.shipping.deploy import load_student
    student = load_student("models/int8/student.int8.onnx")   # or .onnx, or a student.pt checkpoint
    logits = student.logits(images)                      # uint8 images, (N, C, H, W)
    labels = student.predict(images)                     # class names

The preprocessing (resize and centre crop, mean, std, input size, class names) is read from the
file itself: the ONNX metadata `export` writes, or the checkpoint's own fields.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import CheckpointError
from pipeline.core.inputs import InputSpec


@dataclass(frozen=True)
class Student:
    """A deployable classifier and exactly the preprocessing it was trained with."""

    classes: tuple[str, ...]
    spec: InputSpec  # normalisation, input size, evaluation resize
    channels: int
    run: Callable[[np.ndarray], np.ndarray]  # float32 (N, C, H, W) -> logits (N, K)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.spec.size)

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (N, C, H, W) of any size -> the float32 batch the network reads: resized
        and centre-cropped as in evaluation, then normalised."""
        import torch

        from pipeline.data.batches import resize_and_crop

        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1] != self.channels or images.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 images of shape (N, {self.channels}, H, W), got "
                f"{images.dtype} {images.shape}"
            )
        x = resize_and_crop(torch.from_numpy(images).float() / 255, self.spec)
        mean = torch.tensor(self.spec.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.spec.std).view(1, -1, 1, 1)
        return ((x - mean) / std).numpy().astype(np.float32)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Logits (N, K) for uint8 images (N, C, H, W)."""
        return self.run(self.preprocess(images))

    def predict(self, images: np.ndarray) -> list[str]:
        """The predicted class name of each image."""
        return [self.classes[i] for i in self.logits(images).argmax(1)]


def _from_checkpoint(path: Path) -> Student:
    import torch

    from pipeline.models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    model = ckpt.build().float().eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return Student(ckpt.classes, ckpt.spec, ckpt.in_channels, run)


def _from_onnx(path: Path, threads: int) -> Student:
    from pipeline.shipping.engines import open_engine, recorded_json, recorded_spec

    engine = open_engine(path, threads)
    meta = engine.metadata
    missing = [k for k in ("classes", "mean", "std") if k not in meta]
    if missing:
        raise CheckpointError(
            f"{path} carries no {', '.join(missing)} metadata; export it with `sokd export`"
        )
    graph_input = tuple(engine.session.get_inputs()[0].shape[1:])
    classes = recorded_json(meta, "classes", list, path)
    outputs = engine.session.get_outputs()[0].shape
    if len(outputs) != 2 or outputs[1] != len(classes):
        raise CheckpointError(
            f"{path} names {len(classes)} classes in its metadata but outputs {outputs}; "
            f"export the student again"
        )
    if "input_spec" in meta:
        spec = recorded_spec(meta, path, graph_input)
    else:  # files exported before the spec was recorded: the size is the graph's
        mean, std = (tuple(recorded_json(meta, k, list, path)) for k in ("mean", "std"))
        spec = InputSpec(mean, std, (int(graph_input[1]), int(graph_input[2])))
    return Student(tuple(map(str, classes)), spec, int(graph_input[0]), engine.logits)


def load_student(path: Path | str, threads: int = 1) -> Student:
    """A student from `path`: a target's ONNX file (fp32, INT8, ...: run by onnxruntime on the
    CPU with `threads` threads) or a `sokd-checkpoint/1` .pt file (run by torch on the CPU)."""
    path = Path(path)
    if path.suffix == ".onnx":
        return _from_onnx(path, threads)
    return _from_checkpoint(path)
