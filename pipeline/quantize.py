"""INT8 static quantization of the exported student with onnxruntime.

Static, not dynamic: `quantize_dynamic` quantizes activations at run time and leaves convolutions
in fp32, which makes conv nets several times *slower*. Static quantization calibrates activation
ranges once, on a fixed, seeded sample of *training* images (never test images), quantizes weights
per output channel (int8) and activations per tensor (uint8). The default QOperator form stores
integer operators (QLinearConv, ...) directly: smaller than the QDQ form, which wraps float ops
in quantize/dequantize pairs for onnxruntime to fuse.

Two defaults come from measurement on the quickstart student (AVX2 CPU, 10,000 test images): with
plain 8-bit weights INT8 lost 1.02 points of top-1 (94.5 % agreement with fp32), because u8s8
kernels without VNNI add pairs of products in int16 and saturate; 7-bit weights (`reduce_range`)
avoid that. The first convolution reads the raw image through a handful of input channels: kept in
fp32 (`fp32_stem`) it costs ~1 % of the arithmetic and recovers the rest (both: -0.07 points, 99.3 %
agreement).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from pipeline.batches import make_batches
from pipeline.config import QuantizeConfig
from pipeline.data import Prepared
from pipeline.errors import ModelFileError
from pipeline.export import INPUT_NAME
from pipeline.files import atomic_path, sha256_file
from pipeline.inputs import InputSpec
from pipeline.runtime import Runtime

CPU = Runtime(torch.device("cpu"), amp_dtype=None, channels_last=False)


def onnx_input_spec(path: Path, data: Prepared) -> InputSpec:
    """The input spec `export` recorded in an ONNX file's metadata (else the data's own)."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return (
        InputSpec.from_dict(json.loads(meta["input_spec"]))
        if "input_spec" in meta
        else (data.input_spec())
    )


def calibration_batches(
    data: Prepared, cfg: QuantizeConfig, seed: int, spec: InputSpec | None = None
) -> Iterator[np.ndarray]:
    """A fixed, seeded sample of training images, prepared as at inference (`spec`), batched."""
    train = data.splits["train"]
    pick = torch.randperm(len(train.labels), generator=torch.Generator().manual_seed(seed))
    pick = pick[: cfg.calibration_images].sort().values
    sample = dataclasses.replace(data, splits={"calibration": train.subset(pick)})
    batches = make_batches(sample, "calibration", cfg.calibration_batch, None, CPU, seed, spec)
    for images, _ in batches:
        yield images.numpy()


def quantize_int8(
    fp32_path: Path, out: Path, data: Prepared, cfg: QuantizeConfig, seed: int
) -> dict[str, float | str]:
    """Write `out`, the INT8 version of `fp32_path` calibrated on training images; report."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not fp32_path.is_file():
        raise ModelFileError(f"ONNX file not found: {fp32_path}; run `dvc repro export`")

    spec = onnx_input_spec(fp32_path, data)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = calibration_batches(data, cfg, seed, spec)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[cfg.calibrate_method]
    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".quantize-") as scratch:
        pre, raw = Path(scratch) / "pre.onnx", Path(scratch) / "int8.onnx"
        # Shape inference and graph clean-up first, as onnxruntime recommends before quantizing.
        quant_pre_process(str(fp32_path), str(pre))
        fmt = {"qoperator": QuantFormat.QOperator, "qdq": QuantFormat.QDQ}[cfg.format]
        convs = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "Conv"]
        quantize_static(
            str(pre),
            str(raw),
            Reader(),
            nodes_to_exclude=convs[:1] if cfg.fp32_stem else [],
            reduce_range=cfg.reduce_range,
            quant_format=fmt,
            per_channel=cfg.per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
            calibration_providers=["CPUExecutionProvider"],
        )
        proto = onnx.load(str(raw))
    source = {p.key: p.value for p in onnx.load(str(fp32_path)).metadata_props}
    provenance = {
        **source,
        "source_onnx_sha256": sha256_file(fp32_path),
        "quantization": f"static int8 {cfg.format}, {cfg.calibrate_method} calibration on "
        f"{cfg.calibration_images} training images (seed {seed}), "
        f"{'per-channel' if cfg.per_channel else 'per-tensor'} "
        f"{'7-bit' if cfg.reduce_range else '8-bit'} weights"
        f"{', first convolution in fp32' if cfg.fp32_stem else ''}",
    }
    del proto.metadata_props[:]
    for key, value in provenance.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto, full_check=True)
    with atomic_path(out) as tmp:
        onnx.save(proto, str(tmp))
    return {
        "int8/file_bytes": out.stat().st_size,
        "int8/size_ratio": fp32_path.stat().st_size / out.stat().st_size,
        "int8/quantize_s": time.perf_counter() - start,
        "int8/calibration_images": cfg.calibration_images,
    }
