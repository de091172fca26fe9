"""Every table and figure of results in README.md and docs/, rendered from the committed JSON.

    python -m benchmarks.docs            (= make docs) rewrite the rendered blocks and figures
    python -m benchmarks.docs --check    exit 1 naming each block that differs from a fresh render

A rendered block sits between `<!-- rendered: NAME -->` and `<!-- end rendered -->` in a Markdown
file; NAME is one of RENDERERS below, each a function of the metrics and benchmark JSON only (the
machine that measured them comes from the JSON too). Nothing between the markers is typed by hand,
so a re-measurement is a rerun of this command, and a test fails while the committed text differs
from what the committed JSON renders. Figures go to docs/figures/ and `dvc.yaml`'s artifacts get
their test top-1 and size from metrics/verify.json the same way.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- rendered: ([\w-]+) -->\n)(.*?)(<!-- end rendered -->)", re.S)
FIGURES = ROOT / "docs" / "figures"


def read(path: str) -> dict[str, Any]:
    """A committed JSON file, by its path from the repository root."""
    return json.loads((ROOT / path).read_text())


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def machine_line(m: dict[str, Any]) -> str:
    """The machine a JSON file says measured it, in one line."""
    flags = ", ".join(m.get("cpu_flags", [])) or "flags not recorded"
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
    return f"{m.get('cpu', '?')} ({m.get('cores', '?')} cores; {flags}){gpu}, torch {m['torch']}"


# --- the quickstart (README) ---------------------------------------------------------------------


def _objectives(evaluation: dict[str, Any]) -> list[str]:
    return [k.split("/")[0] for k in evaluation if k.endswith("/student/top1")]


def quickstart() -> str:
    """The quickstart's networks and files, from metrics/ of the committed `dvc repro`."""
    ev, ve, ex = (
        read("metrics/evaluate.json"),
        read("metrics/verify.json"),
        read("metrics/export.json"),
    )
    shipped = ex["selection/objective"]
    teacher = read("metrics/train_teacher.json")
    rows = [
        "| network | role | params | MACs / image | validation top-1 | test top-1 |",
        "|---|---|---|---|---|---|",
        f"| teacher | pretrained with cross-entropy | {ev['teacher/params']:,} | "
        f"{ev['teacher/macs'] / 1e6:.1f} M | {pct(teacher['val/top1_final'])} | "
        f"{pct(ev['teacher/top1'])} |",
    ]
    for name in _objectives(ev):
        mark = " (**shipped**)" if name == shipped else ""
        rows.append(
            f"| student | `{name}`{mark} | {ev[f'{name}/student/params']:,} | "
            f"{ev[f'{name}/student/macs'] / 1e6:.1f} M | "
            f"{pct(ex[f'selection/{name}/val_top1'])} | {pct(ev[f'{name}/student/top1'])} |"
        )
        if f"{name}/improved_teacher/top1" in ev:
            rows.append(
                f"| improved teacher | `{name}`'s trunk + bridge | "
                f"{ev[f'{name}/improved_teacher/params']:,} | "
                f"{ev[f'{name}/improved_teacher/macs'] / 1e6:.1f} M | "
                f"{pct(read(f'metrics/distill/{name}.json')['improved_teacher/val_top1'])} | "
                f"{pct(ev[f'{name}/improved_teacher/top1'])} |"
            )
    for target, title in (("onnx", "fp32 ONNX"), ("int8", "INT8 ONNX")):
        rows.append(
            f"| `models/student.{'int8.' if target == 'int8' else ''}onnx` | {title} of the "
            f"shipped student, {ve[f'{target}/file_bytes'] / 1024:.0f} KiB | | | | "
            f"{pct(ve[f'{target}/top1'])} |"
        )
    gain = ev[f"{shipped}/student/top1"] - ev.get("vanilla/student/top1", float("nan"))
    seconds = (
        sum(read(f"metrics/distill/{n}.json")["time/train_s"] for n in _objectives(ev))
        + teacher["time/train_s"]
    )
    notes = [
        "",
        f"- Shipped: `{shipped}`, {ex['selection/reason']}; {gain * 100:+.2f} test points over "
        f"`vanilla` (one seed: docs/comparison.md has the statistics).",
        f"- The gate: onnxruntime fp32 agrees with torch on {pct(ve['onnx/agreement'])} of the "
        f"{ve['test/images']:,} test images (max |Δlogit| {ve['onnx/max_abs_logit_diff']:.1e}), "
        f"INT8 on {pct(ve['int8/agreement'])}, {100 * ve['int8/top1_drop']:+.2f} points below "
        f"torch; the INT8 file is {ve['int8/size_ratio']:.1f}x smaller.",
        f"- Training took {seconds / 60:.1f} min of the run on the machine that made these "
        f"numbers ({ve['versions/torch']} torch; `time/train_s` in metrics/).",
    ]
    return "\n".join(rows + notes) + "\n"


# --- dvc.yaml artifacts -----------------------------------------------------------------------


def artifacts_meta(dvc_yaml: str) -> str:
    """`dvc.yaml` with each artifact's `meta:` line set from metrics/verify.json."""
    ve, ev = read("metrics/verify.json"), read("metrics/evaluate.json")
    shipped = read("metrics/export.json")["selection/objective"]
    figures = {
        "student": (ve["torch/top1"], ev[f"{shipped}/student/file_bytes"]),
        "student-onnx": (ve["onnx/top1"], ve["onnx/file_bytes"]),
        "student-int8": (ve["int8/top1"], ve["int8/file_bytes"]),
    }
    for name, (top1, size) in figures.items():
        meta = f"meta: {{test_top1: {round(top1, 4)}, bytes: {size}}}"
        pattern = rf"(\n  {re.escape(name)}:\n(?:    .*\n)*?    )meta: .*"
        dvc_yaml = re.sub(pattern, rf"\g<1>{meta}", dvc_yaml)
    return dvc_yaml


RENDERERS: dict[str, Callable[[], str]] = {"quickstart": quickstart}


def render_text(text: str) -> str:
    """`text` with every rendered block rendered afresh."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(2)
        if name not in RENDERERS:
            raise SystemExit(f"error: unknown rendered block {name!r}; known: {list(RENDERERS)}")
        return match.group(1) + RENDERERS[name]() + match.group(4)

    return BLOCK.sub(fill, text)


def rendered_files() -> dict[Path, str]:
    """Every file this command writes, with its fresh text (figures aside)."""
    files = {path: render_text(path.read_text()) for path in DOCS}
    dvc_yaml = ROOT / "dvc.yaml"
    files[dvc_yaml] = artifacts_meta(dvc_yaml.read_text())
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report differences, write nothing")
    args = parser.parse_args(argv)
    stale = []
    for path, text in rendered_files().items():
        if text != path.read_text():
            stale.append(str(path.relative_to(ROOT)))
            if not args.check:
                path.write_text(text)
    if not args.check:
        from benchmarks.figures import draw_all

        draw_all(FIGURES)
    if args.check and stale:
        print(f"stale: {', '.join(stale)}; run `make docs`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
