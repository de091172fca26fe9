"""INT8 on real students: calibration settings, and the fp32 fallback when INT8 costs accuracy.

    python -m benchmarks.int8_fallback --student models/distill/sokd/student.pt \
        --data data/prepared.pt [--student S2 --data D2 ...] [--max-drop 0.005] \
        [--out benchmarks/int8_fallback.json]

For each student (a checkpoint and the prepared data it was trained on): export fp32 ONNX, then
1. quantize it plainly under every calibration method x per-channel setting and measure the top-1
   drop on the validation split (the split that chooses) and, for information only, the test split;
2. quantize it with the pipeline's defaults and the accuracy-controlled fallback at `--max-drop`:
   the drop before and after, the layers kept fp32, and size and speed against fp32 (onnxruntime,
   the engines taking turns in rounds, ratios within rounds, as the model card measures them).
Prints a table per student and writes JSON with the machine's CPU flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.config import ExportConfig, GateConfig, QuantizeConfig, VerifyConfig
from pipeline.core.errors import GateError
from pipeline.core.files import sha256_file, write_json
from pipeline.core.runtime import machine
from pipeline.data.batches import make_batches
from pipeline.data.datasets import Prepared, load_prepared
from pipeline.models.checkpoint import load_checkpoint
from pipeline.shipping.engines import open_engine
from pipeline.shipping.int8 import CPU, quantize_int8
from pipeline.shipping.latency import round_ratios, timed_files
from pipeline.shipping.onnx import export_onnx

METHODS = ("minmax", "entropy", "percentile")
ANY_INT8 = GateConfig(max_top1_drop=1.0, min_agreement=0.0)  # plain INT8: no fallback


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


def speed_ratio(fp32: Path, int8: Path, shape: tuple[int, ...], batch: int) -> dict[str, float]:
    """INT8 images/s over fp32 images/s: median of 15 alternating rounds, with the range."""
    x = np.random.default_rng(0).standard_normal((batch, *shape), dtype=np.float32)
    times = timed_files({"f": fp32, "q": int8}, 2, x, rounds=15, repeats=max(1, 128 // batch))
    ratios = round_ratios(times, "f", "q")
    return {"median": statistics.median(ratios), "low": min(ratios), "high": max(ratios)}


def study(student: Path, data_path: Path, max_drop: float, work: Path) -> dict[str, Any]:
    ckpt = load_checkpoint(student)
    data = load_prepared(data_path, ("train", "val", "test"))
    fp32 = work / "fp32.onnx"
    export_onnx(ckpt, fp32, ExportConfig())
    base = {split: top1(fp32, data, split, ckpt.spec) for split in ("val", "test")}
    calibration = []
    for method in METHODS:
        for per_channel in (True, False):
            cfg = QuantizeConfig(calibrate_method=method, per_channel=per_channel)
            out = work / f"{method}-{per_channel}.onnx"
            quantize_int8(fp32, out, data, cfg, ANY_INT8, seed=0)
            row = {"calibrate_method": method, "per_channel": per_channel}
            for split in ("val", "test"):
                row[f"{split}_top1_drop"] = base[split] - top1(out, data, split, ckpt.spec)
                row[f"{split}_agreement"] = agreement(fp32, out, data, split, ckpt.spec)
            calibration.append(row)
    cfg, gate = QuantizeConfig(), dataclasses.replace(VerifyConfig().int8, max_top1_drop=max_drop)
    chosen = work / "fallback.onnx"
    try:
        report = quantize_int8(fp32, chosen, data, cfg, gate, seed=0)
    except GateError as err:  # the gate cannot be met: a result, recorded with its message
        return {"student": str(student), "arch": ckpt.arch, "fp32_top1": base,
                "calibration": calibration, "fallback_error": str(err)}  # fmt: skip
    shape = (data.image_shape[0], *ckpt.spec.size)
    return {
        "student": str(student),
        "student_sha256": sha256_file(student),
        "arch": ckpt.arch,
        "fp32_top1": base,
        "calibration": calibration,
        "defaults": dataclasses.asdict(cfg) | dataclasses.asdict(gate),
        "fallback": report,
        "fallback_test_top1_drop": base["test"] - top1(chosen, data, "test", ckpt.spec),
        "fp32_bytes": fp32.stat().st_size,
        "int8_bytes": chosen.stat().st_size,
        "int8_speed_vs_fp32": {
            f"b{batch}": speed_ratio(fp32, chosen, shape, batch) for batch in (1, 64)
        },
    }


def _print(result: dict[str, Any]) -> None:
    print(f"\n{result['arch']} ({result['student']}): fp32 val/test top-1 {result['fp32_top1']}")
    print("  calibration  per-channel  val drop  test drop  val agreement")
    for r in result["calibration"]:
        print(
            f"  {r['calibrate_method']:<11}  {r['per_channel']!s:<11}  "
            f"{100 * r['val_top1_drop']:+7.2f}  {100 * r['test_top1_drop']:+8.2f}  "
            f"{100 * r['val_agreement']:12.2f}"
        )
    if "fallback_error" in result:
        print(f"  fallback: {result['fallback_error']}")
        return
    f = result["fallback"]
    speed = result["int8_speed_vs_fp32"]
    print(
        f"  fallback: val drop {100 * f['int8/val_top1_drop_plain']:+.2f} -> "
        f"{100 * f['int8/val_top1_drop']:+.2f} points, {f['int8/fallback_layers']} layer(s) kept "
        f"fp32 besides the stem (all fp32: {f['int8/fp32_layers'] or 'none'}); test drop "
        f"{100 * result['fallback_test_top1_drop']:+.2f}; "
        f"{result['fp32_bytes'] / result['int8_bytes']:.2f}x smaller than fp32; speed vs fp32 "
        f"b1 {speed['b1']['median']:.2f}x, b64 {speed['b64']['median']:.2f}x "
        f"({speed['b64']['low']:.2f}-{speed['b64']['high']:.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", type=Path, action="append", required=True)
    parser.add_argument("--data", type=Path, action="append", required=True)
    parser.add_argument("--max-drop", type=float, default=VerifyConfig().int8.max_top1_drop)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/int8_fallback.json"))
    args = parser.parse_args()
    if len(args.student) != len(args.data):
        parser.error("give one --data per --student")
    results = []
    for student, data in zip(args.student, args.data, strict=True):
        with tempfile.TemporaryDirectory() as work:
            results.append(study(student, data, args.max_drop, Path(work)))
        _print(results[-1])
    write_json(args.out, {"machine": machine(), "max_drop": args.max_drop, "students": results})


if __name__ == "__main__":
    main()
