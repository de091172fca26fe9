"""The fp32 ONNX target: the student checkpoint exported with named I/O and a dynamic batch
axis, checked by onnx.checker, stamped with its provenance and preprocessing.

With `export.input: uint8` (the default) the file reads images as a decoder gives them, uint8
(N, H, W, C), and normalises them in its first nodes (`PREPROCESS`), so a deployment needs no
mean, std or layout change; `float` ships the network's own input, normalised (N, C, H, W)."""

from __future__ import annotations

import contextlib
import io
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core.config import ExportConfig
from pipeline.core.errors import CheckpointError
from pipeline.core.files import atomic_path, scratch_dir, sha256_file
from pipeline.core.inputs import InputSpec
from pipeline.models.checkpoint import Checkpoint
from pipeline.shipping.engines import INPUT_NAME, OUTPUT_NAME, PREPROCESS
from pipeline.shipping.targets import ONNX, TARGET_KEY


def _export(model: torch.nn.Module, example: torch.Tensor, path: Path, cfg: ExportConfig) -> None:
    names = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME], "opset_version": cfg.opset}
    if cfg.exporter == "dynamo":
        shapes = ({0: torch.export.Dim("batch", min=1, max=65536)},)
        kwargs = {**names, "dynamo": True, "dynamic_shapes": shapes, "verbose": False}
    else:
        axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
        kwargs = {**names, "dynamo": False, "dynamic_axes": axes}
    # The exporters narrate their progress on stdout and warn about their own deprecations; the
    # stage reports what matters itself.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), **kwargs)


def raw_input(proto: Any, spec: InputSpec) -> None:
    """Make `proto` read uint8 (N, H, W, C) images: Cast, Transpose to NCHW, then the
    normalisation (x / 255 - mean) / std as one Mul and one Add, in front of the network.
    The nodes are named `PREPROCESS/...`, so `quantize` can leave them in fp32."""
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    (old,) = [i for i in graph.input if i.name == INPUT_NAME]
    batch, channels, height, width = old.type.tensor_type.shape.dim
    normalised = f"{PREPROCESS}/normalised"
    for node in graph.node:  # the network now reads the normalised tensor
        node.input[:] = [normalised if n == INPUT_NAME else n for n in node.input]
    std = np.array(spec.std, np.float32).reshape(1, -1, 1, 1)
    mean = np.array(spec.mean, np.float32).reshape(1, -1, 1, 1)
    graph.initializer.extend(
        [
            numpy_helper.from_array(1 / (255 * std), f"{PREPROCESS}/scale"),
            numpy_helper.from_array(-mean / std, f"{PREPROCESS}/shift"),
        ]
    )
    steps = [
        helper.make_node("Cast", [INPUT_NAME], [f"{PREPROCESS}/float"], to=TensorProto.FLOAT),
        helper.make_node(
            "Transpose", [f"{PREPROCESS}/float"], [f"{PREPROCESS}/nchw"], perm=[0, 3, 1, 2]
        ),
        helper.make_node(
            "Mul", [f"{PREPROCESS}/nchw", f"{PREPROCESS}/scale"], [f"{PREPROCESS}/scaled"]
        ),
        helper.make_node("Add", [f"{PREPROCESS}/scaled", f"{PREPROCESS}/shift"], [normalised]),
    ]
    for step, op in zip(steps, ("cast", "nchw", "scale", "shift"), strict=True):
        step.name = f"{PREPROCESS}/{op}"
    nodes = [*steps, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    dims = [
        batch.dim_param or batch.dim_value,
        height.dim_value,
        width.dim_value,
        channels.dim_value,
    ]
    new = helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, dims)
    graph.input.remove(old)
    graph.input.insert(0, new)


def check_exportable(ckpt: Checkpoint) -> None:
    """Refuse what must not ship: a network that is not a student, or non-finite weights."""
    if ckpt.role != "student":
        raise CheckpointError(
            f"{ckpt.path} holds a {ckpt.role} ({ckpt.arch}), not a student; export "
            f"models/distill/<objective>/student.pt"
        )
    for name, tensor in ckpt.state_dict.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(
                f"{ckpt.path} has non-finite weights (NaN or inf in {name!r}); the run that "
                f"wrote it diverged: retrain it"
            )


def export_onnx(ckpt: Checkpoint, out: Path, cfg: ExportConfig) -> dict[str, float | str]:
    """Export `ckpt`'s network to `out` (atomically), run onnx.checker, and return a report."""
    import onnx

    check_exportable(ckpt)
    model = ckpt.build().float().cpu()
    # Batch 2, not 1: a batch of one lets the tracer specialise the batch axis to a constant.
    example = torch.zeros(2, ckpt.in_channels, *ckpt.image_size)
    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    # The dynamo exporter may write weights to a sidecar `<file>.data`: export in a scratch folder,
    # load the model back (which pulls the weights inline) and write one self-contained file.
    with scratch_dir(out.parent, "export") as scratch:
        raw = Path(scratch) / "model.onnx"
        _export(model, example, raw, cfg)
        proto = onnx.load(str(raw))
    raw = cfg.input == "uint8"
    if raw:
        raw_input(proto, ckpt.spec)
    provenance = {
        TARGET_KEY: ONNX.name,
        "checkpoint_sha256": sha256_file(ckpt.path),
        "arch": ckpt.arch,
        "classes": json.dumps(list(ckpt.classes)),
        "mean": json.dumps(list(ckpt.mean)),
        "std": json.dumps(list(ckpt.std)),
        "input_spec": json.dumps(ckpt.spec.to_dict()),
        "preprocessing": ckpt.spec.describe(raw=raw) + ("" if raw else "; NCHW float32"),
        "input_layout": "NHWC uint8" if raw else "NCHW float32",
        "how": f"fp32, torch.onnx {cfg.exporter} exporter, opset {cfg.opset}",
    }
    for key, value in provenance.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "sokd-pipeline"
    onnx.checker.check_model(proto, full_check=True)
    with atomic_path(out) as tmp:
        onnx.save(proto, str(tmp))
    return {
        "onnx/file_bytes": out.stat().st_size,
        "onnx/opset": cfg.opset,
        "onnx/input": cfg.input,
        "onnx/exporter": cfg.exporter,
        "onnx/export_s": time.perf_counter() - start,
        "onnx/checkpoint_sha256": provenance["checkpoint_sha256"],
    }
