"""The one place that opens onnxruntime sessions: engines over ONNX target files.

An engine takes the float32 batch a network reads (normalised, at its input size) and returns
logits, whatever the file reads: a file that takes uint8 images (`export.input: uint8`) gets the
same images back as uint8 (N, H, W, C), exactly where the batch came from 8-bit pixels. A file
that also resizes and crops (`uint8_any_size`) reads a split's images as stored (`batch_logits`).
Files are checked before use (onnx.checker, then the session): a damaged or truncated file
fails in one line, whoever opens it (verify, quantize, the latency rounds, load_student).
`runtime_session` needs neither onnx nor torch: what a deployment (`sokd predict`) opens files with.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import ModelFileError
from pipeline.core.files import sha256_file

INPUT_NAME, OUTPUT_NAME = "images", "logits"
PREPROCESS = "preprocess"  # the name prefix of a uint8 file's normalising nodes


def to_uint8(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised float32 (N, C, H, W) -> the uint8 (N, H, W, C) pixels it stands for (rounded:
    exact for images read from 8-bit files, the nearest 8-bit image for resampled ones)."""
    m, s = (np.asarray(v, np.float32).reshape(1, -1, 1, 1) for v in (mean, std))
    return nhwc(np.rint((x * s + m) * 255).clip(0, 255).astype(np.uint8))


def nhwc(pixels: np.ndarray) -> np.ndarray:
    """uint8 (N, C, H, W) images as a uint8 file reads them: (N, H, W, C)."""
    return np.ascontiguousarray(pixels.transpose(0, 2, 3, 1))


def from_uint8(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 (N, H, W, C) -> the normalised float32 (N, C, H, W) the network reads."""
    m, s = (np.asarray(v, np.float32).reshape(1, -1, 1, 1) for v in (mean, std))
    x = pixels.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
    return np.ascontiguousarray((x - m) / s, dtype=np.float32)


def read_onnx(path: Path, fix: str = "rerun `dvc repro export`") -> Any:
    """The ModelProto of an ONNX file (weights inline); anything else fails in one line."""
    import onnx

    _check_bytes(path, fix)
    try:
        proto = onnx.load(str(path))
    except Exception as err:  # protobuf's DecodeError and friends: the bytes are no model
        raise ModelFileError(f"{path} is not a readable ONNX file ({_first(err)}); {fix}") from None
    if not proto.graph.node:  # some byte strings parse as a protobuf holding nothing
        raise ModelFileError(f"{path} is not a readable ONNX file (it holds no graph); {fix}")
    return proto


def _check_bytes(path: Path, fix: str) -> None:
    """Fail in one line on what is plainly no ONNX file: a folder, nothing, a torch checkpoint."""
    if path.is_dir():
        raise ModelFileError(f"{path} is a directory, not an ONNX file; give the file itself")
    if not path.is_file():
        raise ModelFileError(f"ONNX file not found: {path}; run `dvc repro export`")
    if path.stat().st_size == 0:
        raise ModelFileError(f"{path} is empty (0 bytes), not an ONNX file; {fix}")
    with path.open("rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04":  # a zip archive: what torch.save writes, never an ONNX protobuf
        raise ModelFileError(
            f"{path} is a torch checkpoint (.pt), not an ONNX file; give the .onnx file "
            f"`sokd export` wrote from it"
        )


def _first(err: Exception) -> str:
    line = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return line if len(line) <= 160 else line[:160].rsplit(" ", 1)[0] + " ..."


def metadata(proto: Any) -> dict[str, str]:
    """An ONNX model's metadata_props as a dict."""
    return {p.key: p.value for p in proto.metadata_props}


def recorded_json(meta: dict[str, str], key: str, kind: type, path: Path) -> Any:
    """A JSON value `export` recorded under `key`, checked to be a `kind`."""
    try:
        value = json.loads(meta[key])
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, kind):
        raise ModelFileError(
            f"{path}: metadata {key!r} is not the JSON {kind.__name__} `sokd export` writes "
            f"(it was edited or the file was made elsewhere); export the student again"
        )
    return value


def recorded_spec(meta: dict[str, str], path: Path, graph_input: tuple[Any, ...]) -> Any:
    """The InputSpec recorded in the metadata, checked against the graph's (C, H, W) input."""
    from pipeline.core.inputs import InputSpec

    raw = recorded_json(meta, "input_spec", dict, path)
    try:
        spec = InputSpec.from_dict(raw)
    except (KeyError, TypeError, ValueError, IndexError):
        raise ModelFileError(
            f"{path}: metadata 'input_spec' lacks mean, std or size; export the student again"
        ) from None
    channels, *size = graph_input
    if not all(isinstance(side, int) for side in size):  # any size: the graph fits the images
        size = list(spec.size)
    if list(size) != list(spec.size) or not len(spec.mean) == len(spec.std) == channels:
        raise ModelFileError(
            f"{path}: metadata 'input_spec' ({len(spec.mean)} channels, size "
            f"{list(spec.size)}) does not match the graph's input {list(graph_input)}; "
            f"export the student again"
        )
    return spec


def open_session(path: Path, threads: int, spinning: bool = True) -> Any:
    """An onnxruntime CPU session for `path` (`timing.cpu_session`, after the ONNX checker); a
    damaged or truncated file fails in one line."""
    import onnx

    from pipeline.shipping.timing import cpu_session

    proto = read_onnx(path)
    try:
        onnx.checker.check_model(proto, full_check=True)
        return cpu_session(path, threads, spinning)
    # Protobuf, checker and runtime errors all mean the same thing: this file is unusable.
    except Exception as err:
        raise ModelFileError(
            f"ONNX file {path} is damaged or invalid ({_first(err)}); rerun `dvc repro export`"
        ) from None


def runtime_session(path: Path, threads: int) -> Any:
    """An onnxruntime CPU session for `path` with onnxruntime alone (no onnx, no torch): the
    runtime's own parser checks the graph; a damaged file fails in one line."""
    from pipeline.shipping.timing import cpu_session

    fix = "export the student again (`sokd export`)"
    _check_bytes(path, fix)
    try:
        return cpu_session(path, threads)
    except Exception as err:  # onnxruntime's Fail/InvalidGraph/InvalidProtobuf: unusable file
        raise ModelFileError(f"{path} is not a usable ONNX file ({_first(err)}); {fix}") from None


@dataclass(frozen=True)
class Engine:
    """An ONNX file under onnxruntime: `logits(x)` for normalised float32 (N, C, H, W) batches."""

    path: Path
    session: Any

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    @property
    def takes_uint8(self) -> bool:
        """Whether the file reads uint8 (N, H, W, C) images (and normalises them itself)."""
        return self.session.get_inputs()[0].type == "tensor(uint8)"

    @property
    def resizes(self) -> bool:
        """Whether the file reads images of any size and resizes and crops them itself."""
        return self.takes_uint8 and not isinstance(self.session.get_inputs()[0].shape[1], int)

    @property
    def input_chw(self) -> tuple[Any, ...]:
        """The file's (C, H, W) input, whatever its layout."""
        shape = tuple(self.session.get_inputs()[0].shape[1:])
        return (shape[2], shape[0], shape[1]) if self.takes_uint8 else shape

    @cached_property
    def _normalisation(self) -> tuple[list[float], list[float]]:
        meta = self.metadata
        return recorded_json(meta, "mean", list, self.path), recorded_json(
            meta, "std", list, self.path
        )

    def feed(self, x: np.ndarray) -> np.ndarray:
        """The file's input for the normalised float32 batch `x` (for a file that resizes, the
        batch's pixels at the network's size: what the latency rounds time)."""
        return to_uint8(x, *self._normalisation) if self.takes_uint8 else x

    def run(self, fed: np.ndarray) -> np.ndarray:
        """Logits (N, K) of a batch already in the file's input form (`feed`)."""
        return self.session.run(None, {INPUT_NAME: fed})[0]

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, K) of the normalised float32 batch `x`."""
        return self.run(self.feed(x))

    def batch_logits(self, batches: Any) -> np.ndarray:
        """The logits of every image of `batches` (`pipeline.data.batches`), in order: each batch
        of (images, labels), or the images as stored for a file that resizes them itself."""
        if self.resizes:
            return np.concatenate([self.run(nhwc(p.numpy())) for p in batches.pixels()])
        return np.concatenate([self.logits(x.numpy()) for x, _ in batches])

    def check_signature(self, expected_shape: tuple[int, int, int]) -> None:
        """Fail unless the input is `images` with the checkpoint's (C, H, W) (as (H, W, C) for a
        uint8 file), free batch axis."""
        inputs = self.session.get_inputs()
        expected = list(expected_shape)
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
            raise ModelFileError(
                f"{self.path} takes inputs {[i.name for i in inputs]}, expected one named "
                f"{INPUT_NAME!r}"
            )
        shape = inputs[0].shape
        chw = list(self.input_chw)
        if self.resizes:  # any height and width: the channels must match
            chw[1:] = expected[1:]
        if len(shape) != 4 or chw != expected or isinstance(shape[0], int):
            reads = [expected[1], expected[2], expected[0]] if self.takes_uint8 else expected
            raise ModelFileError(
                f"{self.path} expects input shape {shape}, the checkpoint reads "
                f"[batch, {', '.join(map(str, reads))}]; export again from this checkpoint"
            )

    def check_provenance(self, expected: dict[str, Path]) -> None:
        """Fail unless the file's recorded SHA-256 of each source (metadata key -> file) holds."""
        recorded = self.metadata
        for key, source in expected.items():
            actual = sha256_file(source)
            if key not in recorded:
                raise ModelFileError(
                    f"{self.path} records no provenance ({key}): it was not made by this "
                    f"pipeline from {source}; ship files that `dvc repro` wrote"
                )
            if recorded[key] != actual:
                raise ModelFileError(
                    f"{self.path} was produced from a different {source.name} than {source} "
                    f"({key} {recorded[key][:12]} != {actual[:12]}); rerun `dvc repro`"
                )


def open_engine(path: Path, threads: int, spinning: bool = True) -> Engine:
    """An engine over the ONNX file at `path` (see `open_session`)."""
    return Engine(path, open_session(path, threads, spinning))


def engine_calls(engines: dict[str, Engine], x: np.ndarray) -> dict[str, Callable[[], object]]:
    """One call per engine, each running the batch `x` (for side-by-side timing)."""
    fed = {name: e.feed(x) for name, e in engines.items()}  # made once, outside the timed calls
    return {name: (lambda e=e, f=fed[name]: e.run(f)) for name, e in engines.items()}
