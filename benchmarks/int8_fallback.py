"""INT8 on real students: what each calibration method changes, and how the fallback ranks layers.

    python -m benchmarks.int8_fallback --student models/distill/sokd/student.pt \
        --data data/prepared.pt [--student S2 --data D2 ...] [--out benchmarks/int8_fallback.json]

For each student (a checkpoint and the prepared data it was trained on): export fp32 ONNX, then
1. quantize it plainly (stem and classifier fp32, as the defaults) under every calibration method x
   per-channel weights: how many activation ranges differ from minmax's and by how much, and the
   top-1 drop and agreement with fp32 on validation (the split that decides) and test;
2. run `quantize`'s accuracy-controlled INT8 at the defaults under each layer ranking
   (`quantize.rank`): accepted or refused, the fp32 layers it needed, the builds it took.
Prints a table per student and writes JSON with the machine's CPU flags.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from pipeline.core.config import ExportConfig, QuantizeConfig, VerifyConfig
from pipeline.core.files import sha256_file, write_json
from pipeline.core.runtime import machine
from pipeline.data.batches import make_batches
from pipeline.data.datasets import Prepared, load_prepared
from pipeline.models.checkpoint import load_checkpoint
from pipeline.shipping.engines import open_engine
from pipeline.shipping.int8 import (
    CPU,
    QUANTIZABLE,
    Int8GateError,
    _Quantizer,
    _Reader,
    calibration_batches,
    fixed_fp32_layers,
    quantize_int8,
)
from pipeline.shipping.onnx import export_onnx

# entropy: as onnxruntime's quantize_static runs it; entropy_2048: the KL search it cannot be
# given through quantize_static, 2048 histogram bins down to 128 (TensorRT's calibrator's counts)
METHODS = ("minmax", "entropy", "entropy_2048", "percentile")
RANKS = ("error", "agreement")


def predictions(path: Path, data: Prepared, split: str, spec: Any) -> tuple[Any, Any]:
    """The file's predicted classes on `split`, and the labels."""
    batches = make_batches(data, split, 256, None, CPU, 0, spec)
    return open_engine(path, 2).batch_logits(batches).argmax(1), batches.labels.numpy()


def top1(path: Path, data: Prepared, split: str, spec: Any) -> float:
    predicted, labels = predictions(path, data, split, spec)
    return float((predicted == labels).mean())


def agreement(a: Path, b: Path, data: Prepared, split: str, spec: Any) -> float:
    return float(
        (predictions(a, data, split, spec)[0] == predictions(b, data, split, spec)[0]).mean()
    )


def _bound(value: Any) -> float:
    """One end of a range as onnxruntime's calibration cache writes it (float or array)."""
    value = value.get("data", value) if isinstance(value, dict) else value
    return float(np.ravel(np.asarray(value, dtype=np.float64))[0])


def activation_ranges(cache: Path) -> dict[str, tuple[float, float]]:
    """Every calibrated tensor's (lowest, highest), from the calibration cache."""
    data = json.loads(cache.read_text())["data"]
    return {name: (_bound(r["lowest"]), _bound(r["highest"])) for name, r in data.items()}


def kl_ranges(pre: Path, data: Prepared, cfg: QuantizeConfig, spec: Any, scratch: Path) -> None:
    """Entropy ranges from 2048 bins into the calibration cache `_Quantizer` then reads."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    calibrator = create_calibrator(
        pre,
        None,
        augmented_model_path=str(scratch / "augmented.onnx"),
        calibrate_method=CalibrationMethod.Entropy,
        providers=["CPUExecutionProvider"],
        extra_options={"num_bins": 2048, "num_quantized_bins": 128},
    )
    calibrator.collect_data(_Reader(calibration_batches(data, cfg, 0, spec)))
    save_tensors_data(calibrator.compute_data(), scratch / "calibration")


def calibration_rows(pre: Path, data: Prepared, fp32: Path, spec: Any, work: Path) -> list[dict]:
    """Plain INT8 (stem and classifier fp32, as the defaults) under every calibration method x
    per-channel weights: how far each method's activation ranges are from minmax's, and the
    top-1 drop and agreement with fp32 on validation and test."""
    nodes = [n for n in onnx.load(str(pre)).graph.node if n.op_type in QUANTIZABLE]
    rows, minmax = [], {}
    for method in METHODS:
        for per_channel in (True, False):
            cfg = QuantizeConfig(calibrate_method=method, per_channel=per_channel)
            scratch = work / f"{method}-{per_channel}"
            scratch.mkdir()
            if method == "entropy_2048":
                cfg = QuantizeConfig(calibrate_method="entropy", per_channel=per_channel)
                kl_ranges(pre, data, cfg, spec, scratch)
            q = _Quantizer(pre, scratch, data, cfg, 0, spec)
            out = q.build(fixed_fp32_layers(nodes, cfg))
            ranges = activation_ranges(scratch / "calibration")
            minmax = minmax or ranges
            widths = [
                (hi - lo) / (minmax[k][1] - minmax[k][0] or 1) for k, (lo, hi) in ranges.items()
            ]
            row = {"calibrate_method": method, "per_channel": per_channel,
                   "tensors": len(ranges),
                   "ranges_unlike_minmax": sum(ranges[k] != minmax[k] for k in ranges),
                   "median_width_vs_minmax": float(np.median(widths))}  # fmt: skip
            for split in ("val", "test"):
                row[f"{split}_top1_drop"] = top1(fp32, data, split, spec) - top1(
                    out, data, split, spec
                )
                row[f"{split}_agreement"] = agreement(fp32, out, data, split, spec)
            rows.append(row)
    return rows


def fallback_rows(fp32: Path, data: Prepared, spec: Any, work: Path) -> list[dict]:
    """The defaults' accuracy-controlled INT8 under each layer ranking: accepted or not, with how
    many fp32 layers, how many builds, and agreement on validation and (for information) test."""
    rows = []
    for rank in RANKS:
        out, row = work / f"fallback-{rank}.onnx", {"rank": rank}
        try:
            report = quantize_int8(
                fp32, out, data, QuantizeConfig(rank=rank), VerifyConfig().int8, 0
            )
        except Int8GateError as refused:
            rows.append(row | {"accepted": False} | refused.figures)
            continue
        row |= {"accepted": True} | report
        row["test_agreement"] = agreement(fp32, out, data, "test", spec)
        row["test_top1_drop"] = top1(fp32, data, "test", spec) - top1(out, data, "test", spec)
        rows.append(row)
    return rows


def study(student: Path, data_path: Path, work: Path) -> dict[str, Any]:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    ckpt = load_checkpoint(student)
    data = load_prepared(data_path, ("train", "val", "test"))
    fp32, pre = work / "fp32.onnx", work / "pre.onnx"
    export_onnx(ckpt, fp32, ExportConfig())
    quant_pre_process(str(fp32), str(pre))
    return {
        "student": str(student),
        "student_sha256": sha256_file(student),
        "arch": ckpt.arch,
        "val_images": len(data.splits["val"].labels),
        "fp32_top1": {split: top1(fp32, data, split, ckpt.spec) for split in ("val", "test")},
        "calibration": calibration_rows(pre, data, fp32, ckpt.spec, work),
        "fallback": fallback_rows(fp32, data, ckpt.spec, work),
    }


def _print(result: dict[str, Any]) -> None:
    print(f"\n{result['arch']} ({result['student']}): fp32 val/test top-1 {result['fp32_top1']}")
    print("  calibration  per-channel  ranges unlike minmax  width  val drop  val agr  test agr")
    for r in result["calibration"]:
        print(
            f"  {r['calibrate_method']:<11}  {r['per_channel']!s:<11}  "
            f"{r['ranges_unlike_minmax']:>4} of {r['tensors']:<12}  "
            f"{r['median_width_vs_minmax']:.2f}"
            f"  {100 * r['val_top1_drop']:+7.2f}  {100 * r['val_agreement']:7.2f}"
            f"  {100 * r['test_agreement']:8.2f}"
        )
    for r in result["fallback"]:
        print(
            f"  rank {r['rank']:<9}: {'accepted' if r['accepted'] else 'refused '} with "
            f"{r['int8/fp32_layer_count']} fp32 layer(s), val agreement "
            f"{100 * r['int8/val_agreement']:.2f}, {r['int8/quantize_builds']} builds"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", type=Path, action="append", required=True)
    parser.add_argument("--data", type=Path, action="append", required=True)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/int8_fallback.json"))
    args = parser.parse_args()
    if len(args.student) != len(args.data):
        parser.error("give one --data per --student")
    results = []
    for student, data in zip(args.student, args.data, strict=True):
        with tempfile.TemporaryDirectory() as work:
            results.append(study(student, data, Path(work)))
        _print(results[-1])
    write_json(args.out, {"machine": machine(), "students": results})


if __name__ == "__main__":
    main()
