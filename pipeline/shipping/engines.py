"""The one place that opens onnxruntime sessions: engines over ONNX target files.

An engine takes the float32 batch a network reads (normalised, at its input size) and returns
logits. Files are checked before use (onnx.checker, then the session): a damaged or truncated file
fails in one line, whoever opens it (verify, quantize, the latency rounds, load_student).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import ModelFileError
from pipeline.core.files import sha256_file

INPUT_NAME, OUTPUT_NAME = "images", "logits"


def open_session(path: Path, threads: int, spinning: bool = True) -> Any:
    """An onnxruntime CPU session for `path`; a damaged or truncated file fails in one line.

    `spinning=False` lets idle pool threads sleep at once: when two sessions take turns on a
    small CPU, the idle one's spinning threads otherwise steal the cores from the busy one.
    """
    import onnx
    import onnxruntime as ort

    if not path.is_file():
        raise ModelFileError(f"ONNX file not found: {path}; run `dvc repro export`")
    try:
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    # Protobuf, checker and runtime errors all mean the same thing: this file is unusable.
    except Exception as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise ModelFileError(
            f"ONNX file {path} is damaged or invalid ({reason}); rerun `dvc repro export`"
        ) from None


@dataclass(frozen=True)
class Engine:
    """An ONNX file under onnxruntime: `logits(x)` for float32 (N, C, H, W) batches."""

    path: Path
    session: Any

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, K) of the batch `x`."""
        return self.session.run(None, {INPUT_NAME: x})[0]

    def batch_logits(self, batches: Any) -> np.ndarray:
        """The logits of every batch of (images, labels), in order."""
        return np.concatenate([self.logits(x.numpy()) for x, _ in batches])

    def check_signature(self, expected_shape: tuple[int, int, int]) -> None:
        """Fail unless the input is `images` with the checkpoint's (C, H, W), free batch axis."""
        inputs = self.session.get_inputs()
        expected = list(expected_shape)
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
            raise ModelFileError(
                f"{self.path} takes inputs {[i.name for i in inputs]}, expected one named "
                f"{INPUT_NAME!r}"
            )
        shape = inputs[0].shape
        if len(shape) != 4 or list(shape[1:]) != expected or isinstance(shape[0], int):
            raise ModelFileError(
                f"{self.path} expects input shape {shape}, the checkpoint reads "
                f"[batch, {', '.join(map(str, expected))}]; export again from this checkpoint"
            )

    def check_provenance(self, expected: dict[str, Path]) -> None:
        """Fail unless the file's recorded SHA-256 of each source (metadata key -> file) holds."""
        recorded = self.metadata
        for key, source in expected.items():
            actual = sha256_file(source)
            if recorded.get(key) != actual:
                raise ModelFileError(
                    f"{self.path} was produced from a different {source.name} than {source} "
                    f"({key} {str(recorded.get(key))[:12]} != {actual[:12]}); rerun `dvc repro`"
                )


def open_engine(path: Path, threads: int, spinning: bool = True) -> Engine:
    """An engine over the ONNX file at `path` (see `open_session`)."""
    return Engine(path, open_session(path, threads, spinning))


def engine_calls(engines: dict[str, Engine], x: np.ndarray) -> dict[str, Callable[[], object]]:
    """One call per engine, each running the batch `x` (for side-by-side timing)."""
    return {name: (lambda e=e: e.logits(x)) for name, e in engines.items()}
