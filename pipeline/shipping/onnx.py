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

from pipeline.core.config import ANY_SIZE, ExportConfig
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


def raw_input(proto: Any, spec: InputSpec, any_size: bool = False) -> None:
    """Make `proto` read uint8 (N, H, W, C) images: Cast, Transpose to NCHW, then the
    normalisation (x / 255 - mean) / std as one Mul and one Add, in front of the network.
    `any_size`: H and W are free, and the evaluation geometry (`resize_and_crop`) runs in the
    graph between the two (`_geometry`). The nodes are named `PREPROCESS/...`, so `quantize`
    leaves them in fp32."""
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    (old,) = [i for i in graph.input if i.name == INPUT_NAME]
    batch, channels, height, width = old.type.tensor_type.shape.dim
    normalised = f"{PREPROCESS}/normalised"
    for node in graph.node:  # the network now reads the normalised tensor
        node.input[:] = [normalised if n == INPUT_NAME else n for n in node.input]
    std = np.array(spec.std, np.float32).reshape(1, -1, 1, 1)
    mean = np.array(spec.mean, np.float32).reshape(1, -1, 1, 1)
    # One Mul by 1 / (255 std) at the network's size; with the geometry, / 255 comes first (it
    # resamples images in [0, 1], as the evaluation path does) and 1 / std after it.
    scale = 1 / std if any_size else 1 / (255 * std)
    graph.initializer.extend(
        [
            numpy_helper.from_array(scale.astype(np.float32), f"{PREPROCESS}/scale"),
            numpy_helper.from_array(-mean / std, f"{PREPROCESS}/shift"),
        ]
    )
    p, node = PREPROCESS, helper.make_node
    steps = [
        node("Cast", [INPUT_NAME], [f"{p}/float"], name=f"{p}/cast", to=TensorProto.FLOAT),
        node("Transpose", [f"{p}/float"], [f"{p}/nchw"], name=f"{p}/nchw", perm=[0, 3, 1, 2]),
    ]
    fitted = f"{p}/nchw"
    if any_size:
        steps += _geometry(graph, spec, fitted, f"{p}/fitted")
        fitted = f"{p}/fitted"
    steps += [
        node("Mul", [fitted, f"{p}/scale"], [f"{p}/scaled"], name=f"{p}/scale"),
        node("Add", [f"{p}/scaled", f"{p}/shift"], [normalised], name=f"{p}/shift"),
    ]
    for step in steps:  # every node under the prefix, named after its output
        step.name = step.name or step.output[0]
    nodes = [*steps, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    free = ("height", "width") if any_size else (height.dim_value, width.dim_value)
    dims = [batch.dim_param or batch.dim_value, *free, channels.dim_value]
    new = helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, dims)
    graph.input.remove(old)
    graph.input.insert(0, new)


# ONNX Resize attributes matching torch's antialiased resize on float images: pixel centres
# (half_pixel, the default), taps outside the image dropped and the rest renormalised
# (exclude_outside; without it border pixels differ by up to 10 / 255), PIL's bicubic (a = -0.5).
_RESIZE = {
    "bilinear": {"mode": "linear", "antialias": 1, "exclude_outside": 1},
    "bicubic": {"mode": "cubic", "antialias": 1, "cubic_coeff_a": -0.5, "exclude_outside": 1},
}


def _nearest(source: str, hw: str, target: str, out: str) -> list[Any]:
    """torch's "nearest" resize as Gathers: output pixel i reads floor(i * (in / out)), all in
    float32, as `F.interpolate` computes it. (Resize's own nearest divides by out / in instead,
    which lands a hair under the integer and picks the pixel before, on some sizes.)"""
    from onnx import TensorProto, helper

    p, node, nodes = PREPROCESS, helper.make_node, []
    for axis, side in ((2, "h"), (3, "w")):
        q = f"{p}/nearest_{side}"
        picked = out if side == "w" else f"{q}/picked"
        nodes += [
            node("Gather", [hw, f"{p}/axis_{side}"], [f"{q}/in"], axis=0),
            node("Gather", [target, f"{p}/axis_{side}"], [f"{q}/out"], axis=0),
            node("Cast", [f"{q}/in"], [f"{q}/in_f"], to=TensorProto.FLOAT),
            node("Cast", [f"{q}/out"], [f"{q}/out_f"], to=TensorProto.FLOAT),
            node("Div", [f"{q}/in_f", f"{q}/out_f"], [f"{q}/scale"]),
            node("Range", [f"{p}/zero_i", f"{q}/out", f"{p}/one_i"], [f"{q}/index"]),
            node("Cast", [f"{q}/index"], [f"{q}/index_f"], to=TensorProto.FLOAT),
            node("Mul", [f"{q}/index_f", f"{q}/scale"], [f"{q}/at"]),
            node("Floor", [f"{q}/at"], [f"{q}/at_floor"]),
            node("Cast", [f"{q}/at_floor"], [f"{q}/at_i"], to=TensorProto.INT64),
            node("Sub", [f"{q}/in", f"{p}/one_i"], [f"{q}/last"]),
            node("Min", [f"{q}/at_i", f"{q}/last"], [f"{q}/rows"]),
            node("Gather", [source, f"{q}/rows"], [picked], axis=axis),
        ]
        source = picked
    return nodes


def _geometry(graph: Any, spec: InputSpec, pixels: str, out: str) -> list[Any]:
    """Nodes that turn uint8-valued NCHW floats of any H, W into the evaluation crop in [0, 1],
    as `pipeline.data.batches.resize_and_crop` does; `out` names the crop."""
    from onnx import helper

    p, node = PREPROCESS, helper.make_node
    _constants(graph, spec)
    nodes = [
        node("Mul", [pixels, f"{p}/unit"], [f"{p}/unit_range"]),
        node("Shape", [f"{p}/unit_range"], [f"{p}/nc"], end=2),
        node("Shape", [f"{p}/unit_range"], [f"{p}/hw"], start=2),
    ]
    nodes += _target(spec)
    target = f"{p}/target" if spec.resize else f"{p}/crop_size"
    if spec.interpolation == "nearest":
        nodes += _nearest(f"{p}/unit_range", f"{p}/hw", target, f"{p}/resized")
    else:
        sizes, inputs = f"{p}/sizes", [f"{p}/unit_range", "", "", f"{p}/sizes"]
        nodes += [
            node("Concat", [f"{p}/nc", target], [sizes], axis=0),
            node("Resize", inputs, [f"{p}/resized"], **_RESIZE[spec.interpolation]),
        ]
    return nodes + _crop(target, out)


def _constants(graph: Any, spec: InputSpec) -> None:
    """The geometry's constants, as initializers named `PREPROCESS/<name>` (only those used)."""
    from onnx import numpy_helper

    floats = {"unit": 1 / 255, "two": 2, "zero": 0, "one": 1}
    ints = {"hw_axes": [2, 3], "crop_size": list(spec.size)}
    if spec.resize:
        ints["resize_side"] = [spec.resize]
    if spec.interpolation == "nearest":
        ints |= {"zero_i": 0, "one_i": 1, "axis_h": 0, "axis_w": 1}
    arrays = {k: np.asarray(v, np.float32) for k, v in floats.items()}
    arrays |= {k: np.asarray(v, np.int64) for k, v in ints.items()}
    graph.initializer.extend(
        numpy_helper.from_array(v, f"{PREPROCESS}/{k}") for k, v in arrays.items()
    )


def _target(spec: InputSpec) -> list[Any]:
    """With `spec.resize`: the resized (H, W), the shorter side to `resize` and the longer to
    floor(resize * long / short) (int64 Div floors), as `PREPROCESS/target`."""
    from onnx import helper

    if not spec.resize:  # a plain resize to the input size: the crop size is the target
        return []
    p, node = PREPROCESS, helper.make_node
    return [
        node("ReduceMin", [f"{p}/hw"], [f"{p}/short"], keepdims=1),
        node("ReduceMax", [f"{p}/hw"], [f"{p}/long"], keepdims=1),
        node("Mul", [f"{p}/long", f"{p}/resize_side"], [f"{p}/long_scaled"]),
        node("Div", [f"{p}/long_scaled", f"{p}/short"], [f"{p}/longer"]),
        node("Equal", [f"{p}/hw", f"{p}/short"], [f"{p}/is_short"]),
        node("Where", [f"{p}/is_short", f"{p}/resize_side", f"{p}/longer"], [f"{p}/target"]),
    ]


def _crop(target: str, out: str) -> list[Any]:
    """Clip the resized image to [0, 1] and crop its centre; the offsets round half to even
    (ONNX Round), as Python's `round` does in `resize_and_crop`."""
    from onnx import TensorProto, helper

    p, node = PREPROCESS, helper.make_node
    return [
        node("Clip", [f"{p}/resized", f"{p}/zero", f"{p}/one"], [f"{p}/clipped"]),
        node("Sub", [target, f"{p}/crop_size"], [f"{p}/margin"]),
        node("Cast", [f"{p}/margin"], [f"{p}/margin_f"], to=TensorProto.FLOAT),
        node("Div", [f"{p}/margin_f", f"{p}/two"], [f"{p}/half_margin"]),
        node("Round", [f"{p}/half_margin"], [f"{p}/offset_f"]),
        node("Cast", [f"{p}/offset_f"], [f"{p}/offset"], to=TensorProto.INT64),
        node("Add", [f"{p}/offset", f"{p}/crop_size"], [f"{p}/crop_end"]),
        node("Slice", [f"{p}/clipped", f"{p}/offset", f"{p}/crop_end", f"{p}/hw_axes"], [out]),
    ]


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
    raw = cfg.input != "float"
    if raw:
        raw_input(proto, ckpt.spec, any_size=cfg.input == ANY_SIZE)
    provenance = {
        TARGET_KEY: ONNX.name,
        "checkpoint_sha256": sha256_file(ckpt.path),
        "arch": ckpt.arch,
        "classes": json.dumps(list(ckpt.classes)),
        "mean": json.dumps(list(ckpt.mean)),
        "std": json.dumps(list(ckpt.std)),
        "input_spec": json.dumps(ckpt.spec.to_dict()),
        "preprocessing": ckpt.spec.describe(raw=raw, any_size=cfg.input == ANY_SIZE)
        + ("" if raw else "; NCHW float32"),
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
