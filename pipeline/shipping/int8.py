"""The INT8 target: static quantization of the fp32 ONNX student with onnxruntime.

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
agreement). The last layer writes the logits the gate compares and is a sliver of the arithmetic:
kept fp32 too (`fp32_head`; it lifted the agreement of weak MobileNetV2 students most, measured in
benchmarks/int8_margin.json). Calibration, weight granularity and the
fallback's layer ranking were measured on the quickstart student and two photo-folder students
(`benchmarks/int8_fallback.py`, docs/int8.md): per-channel weights matter, minmax and percentile
trade places between students, and onnxruntime's entropy calibration is minmax in practice.
Students that still lose accuracy get the fp32 fallback below.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core.config import GateConfig, QuantizeConfig
from pipeline.core.errors import GateError, ModelFileError
from pipeline.core.files import atomic_path, scratch_dir, sha256_file
from pipeline.core.inputs import InputSpec
from pipeline.core.runtime import Runtime
from pipeline.data.batches import make_batches
from pipeline.data.datasets import Prepared
from pipeline.shipping.engines import (
    INPUT_NAME,
    PREPROCESS,
    metadata,
    nhwc,
    open_engine,
    read_onnx,
    recorded_spec,
    to_uint8,
)
from pipeline.shipping.gate import Held, Margins, held
from pipeline.shipping.latency import THROUGHPUT_BATCH, round_ratios, timed_files
from pipeline.shipping.targets import INT8, ONNX, TARGET_KEY, target_of

CPU = Runtime(torch.device("cpu"), amp_dtype=None, channels_last=False)
log = logging.getLogger(__name__)


class Int8GateError(GateError):
    """No INT8 file within quantize.max_fp32_layers meets the gate on validation. `figures`: the
    best it reached (agreement, top-1 drop, fp32 layers), as `int8/...` metrics."""

    def __init__(self, message: str, figures: dict[str, Any]) -> None:
        super().__init__(message)
        self.figures = figures


QUANTIZED_OPS = {"QLinearConv", "QLinearMatMul", "QuantizeLinear", "ConvInteger", "MatMulInteger"}


def onnx_input_spec(path: Path, data: Prepared) -> InputSpec:
    """The input spec `export` recorded in an fp32 ONNX file (else the data's own), after
    checking that the file is one quantize can take: fp32, one input named `images`."""
    proto = read_onnx(path)
    meta = metadata(proto)
    ops = sorted({n.op_type for n in proto.graph.node} & QUANTIZED_OPS)
    if ops or target_of(path, meta).name != ONNX.name:
        raise ModelFileError(
            f"{path} is already quantized ({', '.join(ops) or meta.get(TARGET_KEY)}); give the "
            f"fp32 file `sokd export` wrote (models/student.onnx)"
        )
    weights = {init.name for init in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in weights]
    if [i.name for i in inputs] != [INPUT_NAME]:
        raise ModelFileError(
            f"{path} takes inputs {[i.name for i in inputs]}, not one named {INPUT_NAME!r}: it "
            f"was not written by `sokd export`; export the student with it"
        )
    dims = [d.dim_value or d.dim_param for d in inputs[0].type.tensor_type.shape.dim][1:]
    if _takes_uint8(proto):  # (H, W, C)
        dims = [dims[2], dims[0], dims[1]]
    return recorded_spec(meta, path, tuple(dims)) if "input_spec" in meta else data.input_spec()


def _takes_uint8(proto: Any) -> bool:
    """Whether the model reads uint8 images (`export.input: uint8`)."""
    from onnx import TensorProto

    (first,) = [i for i in proto.graph.input if i.name == INPUT_NAME]
    return first.type.tensor_type.elem_type == TensorProto.UINT8


def calibration_source(
    data: Prepared, cfg: QuantizeConfig, seed: int, spec: InputSpec | None = None
) -> Any:
    """Evaluation batches (`pipeline.data.batches`) of a fixed, seeded sample of training
    images, prepared as at inference (`spec`)."""
    train = data.splits["train"]
    pick = torch.randperm(len(train.labels), generator=torch.Generator().manual_seed(seed))
    pick = pick[: cfg.calibration_images].sort().values
    sample = dataclasses.replace(data, splits={"calibration": train.subset(pick)})
    return make_batches(sample, "calibration", cfg.calibration_batch, None, CPU, seed, spec)


def calibration_batches(
    data: Prepared, cfg: QuantizeConfig, seed: int, spec: InputSpec | None = None
) -> Iterator[np.ndarray]:
    """The calibration sample's normalised float32 batches (`calibration_source`)."""
    for images, _ in calibration_source(data, cfg, seed, spec):
        yield images.numpy()


QUANTIZABLE = ("Conv", "Gemm", "MatMul")  # the layers whose precision the fallback chooses
TRIES_PER_LAYER = 3  # candidates examined per layer the cap allows: bounds the builds


@dataclass
class _Quantizer:
    """quantize_static on one pre-processed model, calibrated once (where onnxruntime caches)."""

    pre: Path
    scratch: Path
    data: Prepared
    cfg: QuantizeConfig
    seed: int
    spec: InputSpec
    builds: int = 0
    # a uint8 file's normalising nodes: never quantized (8-bit steps on the input itself)
    preprocess: list[str] = dataclasses.field(init=False)
    raw: bool = dataclasses.field(init=False)  # reads uint8 images: calibration feeds them so
    resizes: bool = dataclasses.field(init=False)  # reads them at any size (uint8_any_size)

    def __post_init__(self) -> None:
        import onnx

        proto = onnx.load(str(self.pre))
        self.preprocess = [n.name for n in proto.graph.node if n.name.startswith(PREPROCESS)]
        self.raw = _takes_uint8(proto)
        (first,) = [i for i in proto.graph.input if i.name == INPUT_NAME]
        self.resizes = self.raw and bool(first.type.tensor_type.shape.dim[1].dim_param)

    def build(self, exclude: list[str], only: list[str] | None = None) -> Path:
        """An INT8 model with the nodes in `exclude` left fp32 (or only `only` quantized)."""
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        self.builds += 1
        out = self.scratch / f"int8-{self.builds}.onnx"
        cache = self.scratch / "calibration"
        extra: dict[str, Any] = {}
        reader = _Reader(self._calibration())
        if "calibration_cache_path" in inspect.signature(quantize_static).parameters:
            extra["calibration_cache_path"] = str(cache)  # onnxruntime >= 1.2x: calibrate once
            if cache.exists():
                reader = None
        method = {  # entropy only for benchmarks.int8_fallback, which measures it
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }[self.cfg.calibrate_method]
        quantize_static(
            str(self.pre),
            str(out),
            reader,
            nodes_to_quantize=only,
            nodes_to_exclude=[*self.preprocess, *exclude],
            reduce_range=self.cfg.reduce_range,
            quant_format={"qoperator": QuantFormat.QOperator, "qdq": QuantFormat.QDQ}[
                self.cfg.format
            ],
            per_channel=self.cfg.per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
            calibration_providers=["CPUExecutionProvider"],
            **extra,
        )
        return out

    def _calibration(self) -> Iterator[np.ndarray]:
        """The calibration images in the file's input form: stored images for a file that
        resizes them itself, 8-bit pixels for a uint8 file, else normalised floats."""
        source = calibration_source(self.data, self.cfg, self.seed, self.spec)
        if self.resizes:
            return (nhwc(p.numpy()) for p in source.pixels())
        if self.raw:
            return (to_uint8(x.numpy(), self.spec.mean, self.spec.std) for x, _ in source)
        return (x.numpy() for x, _ in source)


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over our batches."""

    def __init__(self, batches: Iterator[np.ndarray]) -> None:
        self.batches = batches

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def _val_logits(path: Path, val: Any) -> np.ndarray:
    return open_engine(path, threads=0).batch_logits(val)


@dataclass(frozen=True)
class _Measured(Held):
    """An INT8 candidate file, held to the gate on the validation split."""

    path: Path = Path()


def _measure(
    path: Path, val: Any, fp32: np.ndarray, gate: GateConfig, margins: Margins
) -> _Measured:
    """The candidate against fp32 on validation, held to the gate with `margins` to spare."""
    predicted = _val_logits(path, val).argmax(1)
    verdict = held(gate, margins, predicted, fp32.argmax(1), val.labels.numpy())
    return _Measured(**dataclasses.asdict(verdict), path=path)


def rank_layers(
    q: _Quantizer, fixed: list[str], candidates: list[str], val: Any, fp32: np.ndarray
) -> list[str]:
    """Candidates, most harmful first (quantize.rank): `error`, each quantized alone, by its
    validation logit error; `agreement`, each kept fp32 alone beside `fixed`, by the validation
    agreement with fp32 that restores."""
    harm = {}
    for name in candidates:
        if q.cfg.rank == "error":
            logits = _val_logits(q.build([], only=[name]), val)
            harm[name] = float(np.mean((logits - fp32) ** 2))
        else:
            logits = _val_logits(q.build([*fixed, name]), val)
            harm[name] = float(np.mean(logits.argmax(1) == fp32.argmax(1)))
    return sorted(candidates, key=lambda n: -harm[n])  # stable: ties keep graph order


def _fallback(
    q: _Quantizer, fixed: list[str], candidates: list[str], val: Any, plain: _Measured,
    gate: GateConfig, fp32: np.ndarray, margins: Margins,
) -> tuple[_Measured, list[str]]:  # fmt: skip
    """Keep the most harmful layers in fp32, one more at a time, until the gate holds.

    A layer whose exclusion makes agreement worse by more than the measurement's standard error
    is quantized again and the next one tried: ranked alone, a layer can still hurt once its
    neighbours are quantized (requantizing around an fp32 layer is noise too; measured: one
    depthwise convolution of a short-trained EfficientNet-Lite took agreement from 96 % to 9 %).
    A change within the noise is kept, so pairs of layers that help only together still can.
    """
    ranking = rank_layers(q, fixed, candidates, val, fp32)
    cap = min(q.cfg.max_fp32_layers, len(ranking))
    current, kept = plain, []
    for name in ranking[: TRIES_PER_LAYER * cap]:
        if len(kept) == cap:
            break
        tried = _measure(q.build([*fixed, *kept, name]), val, fp32, gate, margins)
        harmful = tried.agreement < current.agreement - current.agreement_se
        log.info(
            "INT8 with %s fp32 as well: val top-1 drop %.4f, agreement %.4f%s",
            name,
            tried.top1_drop,
            tried.agreement,
            " (worse: quantized again)" if harmful else "",
        )
        if harmful:
            continue
        current, kept = tried, [*kept, name]
        if not current.missed:
            return current, kept
    raise Int8GateError(
        f"INT8 misses the gate with {len(kept)} layer(s) kept fp32 (quantize.max_fp32_layers "
        f"{q.cfg.max_fp32_layers}): {'; '.join(current.missed)}, on {current.images} validation "
        f"images; raise quantize.max_fp32_layers, measure on more images (prepare.val_size), "
        f"or train the student longer (a weakly trained student flips more borderline images)",
        _kept_figures(current, fixed, kept),
    )


def _kept_figures(measured: _Measured, fixed: list[str], kept: list[str]) -> dict[str, Any]:
    """A candidate's validation figures and its fp32 layers (`fixed`, then the fallback's)."""
    return {
        "int8/val_top1_drop": measured.top1_drop,
        "int8/val_agreement": measured.agreement,
        "int8/fp32_layers": "; ".join(fixed + kept),
        "int8/fp32_layer_count": len(fixed + kept),
        "int8/fallback_layers": len(kept),
    }


def _speed_cost(plain: Path, chosen: Path, shape: tuple[int, ...]) -> float:
    """How many times longer a batch takes with the fp32 fallback than plain INT8: the median
    of per-round ratios, the two models taking turns."""
    x = np.random.default_rng(0).standard_normal((THROUGHPUT_BATCH, *shape), dtype=np.float32)
    times = timed_files({"plain": plain, "chosen": chosen}, 0, x, rounds=5, repeats=1)
    return statistics.median(round_ratios(times, "chosen", "plain"))


def _accuracy_controlled(
    q: _Quantizer, nodes: list[Any], fixed: list[str], val: Any, gate: GateConfig
) -> tuple[_Measured, list[str], dict[str, Any]]:
    """Plain INT8 if it meets the gate on validation, else the fp32 fallback; and a report."""
    fp32 = _val_logits(q.pre, val)
    margins = Margins.of(q.cfg, len(val.labels), q.data.sizes.get("test"))
    plain = _measure(q.build(fixed), val, fp32, gate, margins)
    report: dict[str, Any] = {
        "int8/val_top1_fp32": float((fp32.argmax(1) == val.labels.numpy()).mean()),
        "int8/val_top1_drop_plain": plain.top1_drop,
        "int8/val_agreement_plain": plain.agreement,
    }
    if not plain.missed:
        return plain, [], report
    log.info("plain INT8 misses the gate on validation: %s", "; ".join(plain.missed))
    candidates = [n.name for n in nodes if n.name not in fixed]
    try:
        chosen, kept = _fallback(q, fixed, candidates, val, plain, gate, fp32, margins)
    except Int8GateError as refused:
        refused.figures = report | refused.figures | {"int8/quantize_builds": q.builds}
        raise
    shape = (q.data.image_shape[0], *q.spec.size)
    report |= {
        "int8/plain_file_bytes": plain.path.stat().st_size,
        "int8/fallback_size_cost": chosen.path.stat().st_size / plain.path.stat().st_size,
        "int8/fallback_speed_cost": _speed_cost(plain.path, chosen.path, shape),
    }
    return chosen, kept, report


def fixed_fp32_layers(nodes: list[Any], cfg: QuantizeConfig) -> list[str]:
    """The layers kept fp32 before any measurement: the first convolution (`fp32_stem`) and the
    last quantizable layer in graph order, the classifier that writes the logits (`fp32_head`)."""
    convs = [n.name for n in nodes if n.op_type == "Conv"]
    fixed = convs[:1] if cfg.fp32_stem else []
    if cfg.fp32_head and nodes and nodes[-1].name not in fixed:
        fixed.append(nodes[-1].name)
    return fixed


def plain_int8(
    fp32_path: Path, scratch: Path, data: Prepared, cfg: QuantizeConfig, seed: int
) -> Path:
    """`fp32_path` as static INT8 in `scratch`, only the fixed layers (stem, classifier) fp32 and
    no accuracy control: the file the fallback starts from, for its size and speed (`profile`)."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = scratch / "pre.onnx"
    quant_pre_process(str(fp32_path), str(pre))
    nodes = [n for n in onnx.load(str(pre)).graph.node if n.op_type in QUANTIZABLE]
    spec = onnx_input_spec(fp32_path, data)
    return _Quantizer(pre, scratch, data, cfg, seed, spec).build(fixed_fp32_layers(nodes, cfg))


def quantize_int8(
    fp32_path: Path,
    out: Path,
    data: Prepared,
    cfg: QuantizeConfig,
    gate: GateConfig,
    seed: int,
) -> dict[str, Any]:
    """Write `out`, the INT8 version of `fp32_path` calibrated on training images; report.

    The file is accepted only when it meets `gate` (the thresholds `verify` checks on test) on
    the validation split (never the test split); until it does, the layers whose quantization
    harms the validation logits most stay fp32, one more at a time, up to
    `cfg.max_fp32_layers`; past the cap it raises Int8GateError (a GateError, exit 1) with the
    best figures reached, and writes nothing.
    """
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    spec = onnx_input_spec(fp32_path, data)
    val = make_batches(data, "val", cfg.calibration_batch, None, CPU, seed, spec)
    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    with scratch_dir(out.parent, "quantize") as scratch:
        pre = Path(scratch) / "pre.onnx"
        # Shape inference and graph clean-up first, as onnxruntime recommends before quantizing.
        quant_pre_process(str(fp32_path), str(pre))
        nodes = [n for n in onnx.load(str(pre)).graph.node if n.op_type in QUANTIZABLE]
        fixed = fixed_fp32_layers(nodes, cfg)
        q = _Quantizer(pre, Path(scratch), data, cfg, seed, spec)
        chosen, kept, report = _accuracy_controlled(q, nodes, fixed, val, gate)
        report["int8/quantize_builds"] = q.builds
        proto = onnx.load(str(chosen.path))
    _stamp(proto, fp32_path, cfg, seed, kept)
    onnx.checker.check_model(proto, full_check=True)
    with atomic_path(out) as tmp:
        onnx.save(proto, str(tmp))
    return (
        report
        | _kept_figures(chosen, fixed, kept)
        | {
            "int8/file_bytes": out.stat().st_size,
            "int8/size_ratio": fp32_path.stat().st_size / out.stat().st_size,
            "int8/quantize_s": time.perf_counter() - start,
            "int8/calibration_images": cfg.calibration_images,
            "int8/agreement_margin_se": cfg.agreement_margin_se,
            "int8/drop_margin_se": cfg.drop_margin_se,
        }
    )


def _stamp(proto: Any, fp32_path: Path, cfg: QuantizeConfig, seed: int, kept: list[str]) -> None:
    """Replace the INT8 model's metadata with the fp32 file's plus how it was quantized."""

    source = metadata(read_onnx(fp32_path))
    provenance = {
        **source,
        TARGET_KEY: INT8.name,
        "source_onnx_sha256": sha256_file(fp32_path),
        "quantization": f"static int8 {cfg.format}, {cfg.calibrate_method} calibration on "
        f"{cfg.calibration_images} training images (seed {seed}), "
        f"{'per-channel' if cfg.per_channel else 'per-tensor'} "
        f"{'7-bit' if cfg.reduce_range else '8-bit'} weights"
        f"{', first convolution in fp32' if cfg.fp32_stem else ''}"
        f"{', last layer in fp32' if cfg.fp32_head else ''}"
        f"{f', fp32 fallback for {len(kept)} layer(s): ' + ', '.join(kept) if kept else ''}",
    }
    provenance["how"] = provenance["quantization"]
    del proto.metadata_props[:]
    for key, value in provenance.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
