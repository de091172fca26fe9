"""How `quantize` decides, measured on the user-path benchmark's shipped students.

    python -m benchmarks.int8_margin [--out benchmarks/int8_margin.json]

Reads the user-path benchmark's experiments (run `make bench-user-path` first): every student is
the one the pipeline shipped in a cell, exported to the same fp32 ONNX file, calibrated with the
same seed.

- `head`: plain INT8 (no fallback) of every shipped student with the classifier quantized and kept
  fp32 (`quantize.fp32_head`), agreement and top-1 drop on validation and test.
- `margins`: every shipped student quantized at several settings of the margins
  (`quantize.agreement_margin_se`, `quantize.drop_margin_se`), each accepted file checked by
  `verify` on test. An accepted file that then fails `verify` is what a margin is there to
  prevent; a refusal is what it costs.

Prints two tables and writes JSON (machine included).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.experiments import cells, definition, experiments, ship_files
from pipeline.core.config import GateConfig
from pipeline.core.errors import PipelineError
from pipeline.core.files import write_json
from pipeline.core.params import parse_params
from pipeline.core.runtime import machine
from pipeline.data.datasets import load_prepared
from pipeline.models.checkpoint import load_checkpoint
from pipeline.shipping.int8 import quantize_int8
from pipeline.shipping.onnx import export_onnx
from pipeline.shipping.verification import verify

ANY_FILE = GateConfig(max_top1_drop=1.0, min_agreement=0.0)  # plain INT8, whatever it scores
# (agreement_margin_se, drop_margin_se): none, the defaults, and a margin on the drop as well
SETTINGS = ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0))


def ships() -> dict[str, dict[str, Any]]:
    """Every finished cell of the user-path benchmark: its pair, budget and seed."""
    done = experiments()
    return {
        cell: axes | {"seed": overlay["distill"]["seed"]}
        for cell, (axes, overlay) in cells("user_path", definition("user_path")).items()
        if cell in done and not done[cell]["error"]
    }


@contextmanager
def shipped(cell: str) -> Iterator[tuple[Any, ...]]:
    """The ship's params, checkpoint, data and fp32 ONNX file, in a scratch folder."""
    p = parse_params(cells("user_path", definition("user_path"))[cell][1])
    with tempfile.TemporaryDirectory(prefix="margin-") as scratch:
        files = ship_files(cell, Path(scratch))
        ckpt = load_checkpoint(files["student"])
        data = load_prepared(files["data"], ("train", "val", "test"))
        fp32 = Path(scratch) / "student.onnx"
        export_onnx(ckpt, fp32, p.export)
        yield p, ckpt, data, fp32


def _measured(
    p: Any, ckpt: Any, data: Any, fp32: Path, int8: Path, cfg: Any, gate: GateConfig
) -> dict[str, Any]:
    """Quantize `fp32` to `int8` under `cfg` and `gate`, verify it on test; the figures."""
    q = quantize_int8(fp32, int8, data, cfg, gate, p.seed)
    report, _ = verify(ckpt, [fp32, int8], data, p.verify)
    return {
        "fp32_layers": q["int8/fp32_layer_count"],
        "val_top1_drop": q["int8/val_top1_drop"],
        "val_agreement": q["int8/val_agreement"],
        "test_top1_drop": report["int8/top1_drop"],
        "test_agreement": report["int8/agreement"],
        "verify_passed": report["gate/passed"],
    }


def head_rows(cell: str, where: dict[str, Any]) -> list[dict]:
    rows = []
    with shipped(cell) as (p, ckpt, data, fp32):
        for head in (False, True):
            int8 = fp32.with_name(f"plain-{head}.int8.onnx")
            cfg = dataclasses.replace(p.quantize, fp32_head=head)
            row = where | {"fp32_head": head}
            rows.append(row | _measured(p, ckpt, data, fp32, int8, cfg, ANY_FILE))
    return rows


def margin_rows(cell: str, where: dict[str, Any]) -> list[dict]:
    rows = []
    with shipped(cell) as (p, ckpt, data, fp32):
        for agreement, drop in SETTINGS:
            int8 = fp32.with_name(f"student-{agreement:g}-{drop:g}.int8.onnx")
            margins = {"agreement_margin_se": agreement, "drop_margin_se": drop}
            cfg = dataclasses.replace(p.quantize, **margins)
            row = where | margins
            try:
                measured = _measured(p, ckpt, data, fp32, int8, cfg, p.verify.int8)
            except PipelineError as err:  # refused: a result
                rows.append(row | {"accepted": False, "reason": str(err)})
                continue
            rows.append(row | {"accepted": True} | measured)
    return rows


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def head_table(rows: list[dict]) -> str:
    lines = [
        "| pair | budget | seed | classifier | validation: agreement, drop | test: agreement, drop "
        "| verify |"
    ]
    lines.append("|---|---|---|---|---|---|---|")
    for r in rows:
        val = f"{_pct(r['val_agreement'])}, {100 * r['val_top1_drop']:+.1f}"
        test = f"{_pct(r['test_agreement'])}, {100 * r['test_top1_drop']:+.1f}"
        lines.append(
            f"| {r['pair']} | {r['budget']} | {r['seed']} | "
            f"{'fp32' if r['fp32_head'] else 'INT8'} | {val} | {test} | "
            f"{'passed' if r['verify_passed'] else 'FAILED'} |"
        )
    return "\n".join(lines)


def margin_table(rows: list[dict]) -> str:
    lines = [
        "| pair | budget | seed | margins (agreement, drop) | accepted | val agreement "
        "| test agreement | verify |"
    ]
    lines.append("|---|---|---|---|---|---|---|---|")
    for r in rows:
        got = r["accepted"]
        val = _pct(r["val_agreement"]) if got else "—"
        test = _pct(r["test_agreement"]) if got else "—"
        passed = ("passed" if r["verify_passed"] else "FAILED") if got else "—"
        lines.append(
            f"| {r['pair']} | {r['budget']} | {r['seed']} | "
            f"{r['agreement_margin_se']:g}, {r['drop_margin_se']:g} | "
            f"{'yes' if got else 'no'} | {val} | {test} | {passed} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/int8_margin.json"))
    args = parser.parse_args(argv)
    found = ships()
    head = [r for cell, where in found.items() for r in head_rows(cell, where)]
    print(head_table(head))
    margins = [r for cell, where in found.items() for r in margin_rows(cell, where)]
    print(margin_table(margins))
    result = {"machine": machine(), "head": head, "settings": SETTINGS, "rows": margins}
    write_json(args.out, result)


if __name__ == "__main__":
    main()
