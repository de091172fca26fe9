"""A shipped student as a Python object, and images in, labels out: torch-free for ONNX files.

    from pipeline.shipping.deploy import load_student
    student = load_student("models/int8/student.int8.onnx")   # or .onnx, or a student.pt checkpoint
    logits = student.logits(images)                      # uint8 images, (N, C, H, W), any H, W
    labels = student.predict(images)                     # class names
    rows = student.predict_files(["photos/"], top_k=3)   # image files or folders

The preprocessing (resize and centre crop, mean, std, input size, class names) is read from the
file itself: the ONNX metadata `export` writes, or the checkpoint's own fields. An ONNX file needs
only onnxruntime, numpy and Pillow (`pip install sokd-pipeline`, no training extra); a checkpoint
needs torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import CheckpointError, DataError
from pipeline.core.inputs import InputSpec
from pipeline.shipping.engines import from_uint8, nhwc

# What Pillow decodes and a user keeps photos as; anything else in a folder is skipped.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Prediction:
    """One image's top-k classes, most probable first."""

    path: Path
    top: tuple[tuple[str, float], ...]  # (label, probability)


def image_files(paths: Iterable[Path | str]) -> list[Path]:
    """Every image named or inside a named folder (recursively, sorted); one line when a path is
    missing or a folder holds no image."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            inner = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not inner:
                raise DataError(
                    f"{path} holds no image ({', '.join(IMAGE_SUFFIXES)}); give image files or "
                    "folders of them"
                )
            found += inner
        elif path.is_file():
            found.append(path)
        else:
            raise DataError(f"{path}: no such file or folder; give image files or folders")
    return found


def read_image(path: Path, channels: int) -> np.ndarray:
    """An image file as uint8 (C, H, W): grey for a 1-channel student, RGB for 3."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("L" if channels == 1 else "RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise DataError(
            f"{path} is not a readable image ({err}); remove it or convert it"
        ) from None
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


_FILTERS = {"bilinear": 2, "bicubic": 3}  # PIL.Image.Resampling values


def fit(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """A uint8 (C, H, W) image as float32 in [0, 1] at the network's input size, made as the
    evaluation path makes it (`resize_and_crop`): the shorter side resized to `spec.resize`
    (truncating the other, as torchvision does) and a centre crop (offsets rounded), or, without
    `spec.resize`, a resize to the input size when it differs. Pillow resamples the float planes
    with antialiasing, as torch's antialiased resize on float images does (within 1e-5)."""
    from PIL import Image

    (h, w), (_, ih, iw) = spec.size, image.shape
    if not spec.resize:
        size = (w, h)
    elif ih <= iw:
        size = (int(spec.resize * iw / ih), spec.resize)
    else:
        size = (spec.resize, int(spec.resize * ih / iw))
    planes = image.astype(np.float32) / 255
    if size != (iw, ih) and spec.interpolation == "nearest":
        planes = planes[:, _nearest(ih, size[1])][:, :, _nearest(iw, size[0])]
    elif size != (iw, ih):
        resample = _FILTERS[spec.interpolation]
        planes = np.stack(
            [np.asarray(Image.fromarray(c, "F").resize(size, resample)) for c in planes]
        )
        planes = planes.clip(0, 1)
    top = round((planes.shape[1] - h) / 2)  # half to even, as the evaluation path rounds
    left = round((planes.shape[2] - w) / 2)
    return planes[:, top : top + h, left : left + w]


def _nearest(size: int, out: int) -> np.ndarray:
    """The source rows (or columns) of torch's "nearest" resize: floor(i * size / out) in float32,
    the arithmetic of `F.interpolate` (Pillow samples pixel centres instead)."""
    scale = np.float32(size) / np.float32(out)
    return np.minimum(np.floor(np.arange(out, dtype=np.float32) * scale).astype(int), size - 1)


@dataclass(frozen=True)
class Student:
    """A deployable classifier and exactly the preprocessing it was trained with."""

    classes: tuple[str, ...]
    spec: InputSpec  # normalisation, input size, evaluation resize
    channels: int
    # float32 (N, C, H, W) -> logits (N, K); when `resizes`, uint8 (N, H, W, C) of any size
    run: Callable[[np.ndarray], np.ndarray]
    resizes: bool = False  # an ONNX file that resizes and crops itself (uint8_any_size)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.spec.size)

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (N, C, H, W) of any size -> the float32 batch the network reads: resized
        and centre-cropped as in evaluation, then normalised."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1] != self.channels or images.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 images of shape (N, {self.channels}, H, W), got "
                f"{images.dtype} {images.shape}"
            )
        if self.resizes:
            return nhwc(images)
        return self._normalise([fit(image, self.spec) for image in images])

    def _normalise(self, fitted: list[np.ndarray]) -> np.ndarray:
        """Fitted images (float, [0, 1]) -> the network's batch, through 8-bit pixels: what a
        uint8 file reads (`export.input`) and `verify` measured, whichever file runs."""
        pixels = np.rint(np.stack(fitted) * 255).astype(np.uint8).transpose(0, 2, 3, 1)
        return from_uint8(pixels, self.spec.mean, self.spec.std)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Logits (N, K) for uint8 images (N, C, H, W)."""
        return self.run(self.preprocess(images))

    def predict(self, images: np.ndarray) -> list[str]:
        """The predicted class name of each image."""
        return [self.classes[i] for i in self.logits(images).argmax(1)]

    def predict_files(
        self, paths: Iterable[Path | str], top_k: int = 1, batch: int = 64
    ) -> list[Prediction]:
        """Each image file (or every image in a folder): its `top_k` classes and probabilities."""
        files, rows = image_files(paths), []
        k = min(top_k, len(self.classes))
        for start in range(0, len(files), batch):
            chunk = files[start : start + batch]
            logits = self._file_logits(chunk).astype(np.float64)
            probs = np.exp(logits - logits.max(1, keepdims=True))
            probs /= probs.sum(1, keepdims=True)
            for path, p in zip(chunk, probs, strict=True):
                best = np.argsort(-p, kind="stable")[:k]
                rows.append(Prediction(path, tuple((self.classes[i], float(p[i])) for i in best)))
        return rows

    def _file_logits(self, files: list[Path]) -> np.ndarray:
        images = [read_image(f, self.channels) for f in files]
        if self.resizes:  # each image at its own size, fitted by the file
            return np.concatenate([self.run(nhwc(image[None])) for image in images])
        return self.run(self._normalise([fit(image, self.spec) for image in images]))


def _from_checkpoint(path: Path) -> Student:
    try:
        import torch
    except ImportError:  # the runtime install: ONNX files only
        from pipeline.core.errors import ConfigError

        raise ConfigError(
            f"{path} is a checkpoint, which needs torch: give the .onnx file `sokd export` wrote, "
            "or pip install 'sokd-pipeline[train]'"
        ) from None

    from pipeline.models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    model = ckpt.build().float().eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return Student(ckpt.classes, ckpt.spec, ckpt.in_channels, run)


def _from_onnx(path: Path, threads: int) -> Student:
    from pipeline.shipping.engines import Engine, recorded_json, recorded_spec, runtime_session

    engine = Engine(path, runtime_session(path, threads))
    meta = engine.metadata
    missing = [k for k in ("classes", "mean", "std") if k not in meta]
    if missing:
        raise CheckpointError(
            f"{path} carries no {', '.join(missing)} metadata; export it with `sokd export`"
        )
    graph_input = engine.input_chw
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
    run = engine.run if engine.resizes else engine.logits
    return Student(tuple(map(str, classes)), spec, int(graph_input[0]), run, engine.resizes)


def load_student(path: Path | str, threads: int = 1) -> Student:
    """A student from `path`: a target's ONNX file (fp32, INT8, ...: run by onnxruntime on the
    CPU with `threads` threads) or a `sokd-checkpoint/1` .pt file (run by torch on the CPU)."""
    path = Path(path)
    if path.suffix == ".onnx":
        return _from_onnx(path, threads)
    return _from_checkpoint(path)


def check_output(out: Path) -> None:
    """Fail in one line, before any work, on an output `write_predictions` cannot write."""
    from pipeline.core.errors import ConfigError
    from pipeline.core.files import writable_file

    if out.suffix.lower() not in (".csv", ".json"):
        raise ConfigError(f"--out {out}: give a .csv or .json file")
    writable_file(out)


def write_predictions(rows: Sequence[Prediction], out: Path) -> None:
    """The predictions as CSV (path, then label and probability per rank) or JSON, by suffix."""
    import csv
    import io
    import json

    from pipeline.core.files import write_text

    check_output(out)
    if out.suffix.lower() == ".json":
        listed = [
            {"path": str(r.path), "top": [{"label": la, "probability": p} for la, p in r.top]}
            for r in rows
        ]
        text = json.dumps(listed, indent=2) + "\n"
    elif out.suffix.lower() == ".csv":
        k = max((len(r.top) for r in rows), default=1)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", *(f"{c}{i}" for i in range(1, k + 1) for c in ("label", "prob"))])
        for r in rows:
            writer.writerow([r.path, *(v for pair in r.top for v in pair)])
        text = buffer.getvalue()
    write_text(out, text)  # a temp file beside `out`, renamed onto it: never half-written
