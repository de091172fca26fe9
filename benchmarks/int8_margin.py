"""How `quantize.margin_se` decides: the user-path students `quantize` refused, quantized again
with smaller margins, each accepted file checked by `verify` on the test split.

    python -m benchmarks.int8_margin [--margins 1 0] [--out benchmarks/int8_margin.json]

Reads the user-path benchmark's records (run `make bench-user-path` first): every shipped student
whose INT8 file was refused, the same selection, the same fp32 ONNX export and calibration seed;
only `quantize.margin_se` changes. An accepted file that then fails `verify` is what the margin is
there to prevent. Prints a table and writes JSON (machine included).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.user_path import BENCH, Bench, load_bench
from pipeline.checkpoint import load_checkpoint
from pipeline.data import load_prepared
from pipeline.errors import PipelineError
from pipeline.files import write_json
from pipeline.runtime import machine
from pipeline.selection import choose_student
from pipeline.targets.int8 import quantize_int8
from pipeline.targets.onnx import export_onnx
from pipeline.verification import verify


def refused(bench: Path = BENCH) -> list[tuple[str, str, int]]:
    """(pair, budget, seed) of every ship whose INT8 file `quantize` refused."""
    found = []
    for path in sorted((bench / "ship").glob("*/*/*.json")):
        if "error" in json.loads(path.read_text())["quantize"]:
            found.append((path.parent.parent.name, path.parent.name, int(path.stem)))
    return found


def requantize(b: Bench, pair: str, budget: str, seed: int, margins: list[float]) -> list[dict]:
    p = b.params(pair, budget, seed)
    teacher = b.work / pair / "teacher.pt"
    _, chosen = choose_student(
        b.run_dir(pair, budget, seed), p.distill.objectives, teacher, p.export
    )
    data = load_prepared(b.work / "prepared.pt", ("train", "val", "test"))
    ckpt = load_checkpoint(chosen)
    rows = []
    with tempfile.TemporaryDirectory(prefix="margin-") as scratch:
        fp32 = Path(scratch) / "student.onnx"
        export_onnx(ckpt, fp32, p.export)
        for margin in margins:
            int8 = Path(scratch) / f"student-{margin:g}.int8.onnx"
            row: dict[str, Any] = {
                "pair": pair,
                "budget": budget,
                "seed": seed,
                "margin_se": margin,
            }
            try:
                cfg = dataclasses.replace(p.quantize, margin_se=margin)
                q = quantize_int8(fp32, int8, data, cfg, p.verify.int8, p.seed)
                report, _ = verify(ckpt, [fp32, int8], data, p.verify)
            except PipelineError as err:  # refused again: a result
                rows.append(row | {"accepted": False, "reason": str(err)})
                continue
            rows.append(
                row
                | {"accepted": True, "fp32_layers": q["int8/fp32_layer_count"]}
                | {
                    "val_top1_drop": q["int8/val_top1_drop"],
                    "val_agreement": q["int8/val_agreement"],
                }
                | {"test_top1_drop": report["int8/top1_drop"]}
                | {
                    "test_agreement": report["int8/agreement"],
                    "verify_passed": report["gate/passed"],
                }
            )
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| pair | budget | seed | margin_se | accepted | val agreement | test agreement | verify |"
    ]
    lines.append("|---|---|---|---|---|---|---|---|")
    for r in rows:
        got = r["accepted"]
        val = f"{100 * r['val_agreement']:.1f} %" if got else "—"
        test = f"{100 * r['test_agreement']:.1f} %" if got else "—"
        passed = ("passed" if r["verify_passed"] else "FAILED") if got else "—"
        lines.append(
            f"| {r['pair']} | {r['budget']} | {r['seed']} | {r['margin_se']:g} | "
            f"{'yes' if got else 'no'} | {val} | {test} | {passed} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--margins", type=float, nargs="+", default=[1.0, 0.0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/int8_margin.json"))
    args = parser.parse_args(argv)
    b = load_bench()
    rows = [r for case in refused() for r in requantize(b, *case, args.margins)]
    print(table(rows))
    write_json(args.out, {"machine": machine(), "margins": args.margins, "rows": rows})


if __name__ == "__main__":
    main()
