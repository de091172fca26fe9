"""Deployable targets: the files the pipeline ships beside the student's checkpoint.

Each target is registered here under the name its metrics (`<name>/...`) and its gate
(`verify.<name>`) use, and built by its own module (`shipping/onnx.py`, `shipping/int8.py`)
from a source artifact (the student checkpoint, or another target's file), which stamps the
file with its target name and provenance. Every target file opens through `engines.py` (the one
place that starts onnxruntime) as an engine whose `logits` take the normalised float32 batch.
`verify`, the latency rounds, the model card and `load_student` loop over the files given,
whatever their target.

Add a target: a `Target` registered here, a module that builds its file, a `verify.<name>`
gate in `pipeline/core/config.py`, a stage that runs the build (stages/<stage>.py and dvc.yaml), and
the file in verify's `--artifact` list.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.core.registry import Registry


@dataclass(frozen=True)
class Target:
    """What the pipeline knows about one kind of deployable file."""

    name: str  # registry key, metric prefix, verify.<name> gate
    title: str  # how the card and the logs call it, e.g. "ONNX INT8 (onnxruntime)"
    source: str  # what it is built from: "checkpoint" or another target's name


TARGETS: Registry[Target] = Registry("target")
ONNX = TARGETS.register("onnx")(Target("onnx", "ONNX fp32 (onnxruntime)", "checkpoint"))
INT8 = TARGETS.register("int8")(Target("int8", "ONNX INT8 (onnxruntime)", "onnx"))
TARGET_KEY = "target"  # the ONNX metadata key that names a file's target
# quantize writes a folder: the INT8 file when accepted, in its place the refusal when declined
INT8_FILE, REFUSAL_FILE = "student.int8.onnx", "refused.json"


def target_of(path: Path, metadata: dict[str, str]) -> Target:
    """The target that made the file at `path`, from its metadata (files made before targets
    were recorded: INT8 when a quantization is described, else fp32 ONNX)."""
    from pipeline.core.errors import ModelFileError

    name = metadata.get(TARGET_KEY) or ("int8" if "quantization" in metadata else "onnx")
    if name not in TARGETS:
        raise ModelFileError(
            f"{path} was made by target {name!r}, which this version does not know; "
            f"choose files of {', '.join(TARGETS.names())}"
        )
    return TARGETS.get(name)
