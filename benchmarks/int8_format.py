"""QDQ against QOperator: the two INT8 formats `quantize.format` offers, side by side.

    python -m benchmarks.int8_format --student models/student.pt --data data/prepared.pt \
        --label quickstart [--student S2 --data D2 --label L2 ...] [--threads 1 2] \
        [--rounds 30] [--out benchmarks/int8_format.json]

For each student (a checkpoint and the prepared data it was trained on): export fp32 ONNX, then
run `quantize`'s accuracy-controlled INT8 at the defaults once per format (the same calibration
images, the same gate on validation), and measure what a user gets from each file: test top-1
drop and agreement with the fp32 file, bytes, the layers kept fp32, and speed at batch 1 and 64
(fp32, QOperator and QDQ timed in alternating rounds; ratios taken within each round).
Writes JSON with the machine's CPU flags; `python -m benchmarks.docs` renders docs/int8.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from benchmarks.int8_fallback import predictions
from pipeline.core.config import ExportConfig, QuantizeConfig, VerifyConfig
from pipeline.core.files import sha256_file, write_json
from pipeline.core.runtime import machine
from pipeline.data.datasets import Prepared, load_prepared
from pipeline.models.checkpoint import load_checkpoint
from pipeline.shipping.engines import open_engine
from pipeline.shipping.int8 import Int8GateError, quantize_int8
from pipeline.shipping.latency import round_ratios, timed_files
from pipeline.shipping.onnx import export_onnx

FORMATS = ("qoperator", "qdq")
BATCHES = (1, 64)


def accuracy(files: dict[str, Path], data: Prepared, spec: Any) -> dict[str, dict[str, float]]:
    """Each file's test top-1, and its drop and agreement against the fp32 file."""
    labels = data.splits["test"].labels.numpy()
    predicted = {name: predictions(path, data, "test", spec)[0] for name, path in files.items()}
    fp32 = predicted["fp32"]
    return {
        name: {
            "test_top1": float((p == labels).mean()),
            "test_top1_drop": float((fp32 == labels).mean() - (p == labels).mean()),
            "test_agreement": float((p == fp32).mean()),
            "bytes": files[name].stat().st_size,
        }
        for name, p in predicted.items()
    }


def speed(files: dict[str, Path], threads: list[int], rounds: int) -> list[dict[str, Any]]:
    """Per thread count and batch: each file's median ms per call, and each INT8 format's
    speed-up over fp32 and QDQ's over QOperator (medians of per-round ratios, p10-p90)."""
    shape = open_engine(files["fp32"], 1).input_chw
    rows = []
    for t in threads:
        for batch in BATCHES:
            x = np.random.default_rng(0).standard_normal((batch, *shape), dtype=np.float32)
            times = timed_files(files, t, x, rounds, max(1, 256 // batch))
            row: dict[str, Any] = {"threads": t, "batch": batch}
            for name, per_round in times.items():
                medians = [statistics.median(r) for r in per_round]
                row[f"{name}_ms"] = 1000 * statistics.median(medians)
            for fast, slow in [(f, "fp32") for f in FORMATS] + [("qdq", "qoperator")]:
                if fast in times and slow in times:
                    ratios = round_ratios(times, slow, fast)
                    row[f"{fast}_vs_{slow}"] = statistics.median(ratios)
                    row[f"{fast}_vs_{slow}_p10_p90"] = [
                        float(np.percentile(ratios, 10)),
                        float(np.percentile(ratios, 90)),
                    ]
            rows.append(row)
            print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()})
    return rows


def study(
    label: str, student: Path, data_path: Path, work: Path, threads: list[int], rounds: int
) -> dict[str, Any]:
    ckpt = load_checkpoint(student)
    data = load_prepared(data_path, ("train", "val", "test"))
    files = {"fp32": work / "fp32.onnx"}
    export_onnx(ckpt, files["fp32"], ExportConfig())
    quantized = {}
    for fmt in FORMATS:
        out = work / f"{fmt}.onnx"
        try:
            report = quantize_int8(
                files["fp32"], out, data, QuantizeConfig(format=fmt), VerifyConfig().int8, 0
            )
        except Int8GateError as refused:
            quantized[fmt] = {"accepted": False, **refused.figures}
            continue
        quantized[fmt] = {"accepted": True, **report}
        files[fmt] = out
    print(f"{label}: {ckpt.arch}, formats accepted: {[f for f in FORMATS if f in files]}")
    return {
        "label": label,
        "student": str(student),
        "student_sha256": sha256_file(student),
        "arch": ckpt.arch,
        "quantize": quantized,
        "accuracy": accuracy(files, data, ckpt.spec),
        "speed": speed(files, threads, rounds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", type=Path, action="append", required=True)
    parser.add_argument("--data", type=Path, action="append", required=True)
    parser.add_argument("--label", action="append", required=True)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/int8_format.json"))
    args = parser.parse_args()
    if not len(args.student) == len(args.data) == len(args.label):
        parser.error("give one --data and one --label per --student")
    results = []
    for label, student, data in zip(args.label, args.student, args.data, strict=True):
        with tempfile.TemporaryDirectory() as work:
            results.append(study(label, student, data, Path(work), args.threads, args.rounds))
    write_json(
        args.out,
        {"machine": machine() | {"onnxruntime": ort.__version__}, "students": results},
    )


if __name__ == "__main__":
    main()
