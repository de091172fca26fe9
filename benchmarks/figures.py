"""The figures of README.md and docs/, drawn from dvc.yaml and the committed JSON (make docs).

- pipeline.png: the stages of `dvc.yaml` and what flows between them (its `dvc dag`);
- comparison.png: each method minus SOKD on the comparison benchmark, 95 % paired intervals;
- user_path.png: each objective minus vanilla on the user-path benchmark, per pair and budget;
- tradeoff.png: test top-1 against size and batch-1 latency of the quickstart's networks;
- budget_front.png: the budget preset's students, validation top-1 against INT8 p90 latency.

Every series has its own colour and marker, so no two look alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import yaml

ROOT = Path(__file__).resolve().parents[1]
MARKERS = "osD^v<>pPX*h"


def _style(i: int) -> dict[str, Any]:
    return {"color": plt.get_cmap("tab20")(i % 20), "marker": MARKERS[i % len(MARKERS)]}


def _save(fig: plt.Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # No timestamps in the file: the same data gives the same bytes.
    fig.savefig(path, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)


def _read(path: str) -> dict[str, Any] | None:
    file = ROOT / path
    return json.loads(file.read_text()) if file.is_file() else None


def pipeline_stages() -> list[tuple[str, list[str]]]:
    """(stage, what it writes) in dvc.yaml order: its outs, and its metrics for the last one."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    written = []
    for name, stage in stages.items():
        outs = [str(next(iter(o)) if isinstance(o, dict) else o) for o in stage.get("outs", [])]
        outs = [o for o in outs if "/state/" not in o and not o.startswith("plots/")] or [
            str(next(iter(m))) for m in stage.get("metrics", [])
        ]
        outs = [
            o.replace("${item.objective}", "<objective>").replace("${prepare.dataset}", "<dataset>")
            for o in outs
        ]
        written.append((name, outs + (["(one per objective)"] if "matrix" in stage else [])))
    return written


def draw_pipeline(path: Path) -> None:
    stages = pipeline_stages()
    fig, ax = plt.subplots(figsize=(1.6 * len(stages), 1.9))
    box = {"boxstyle": "round,pad=0.4", "facecolor": "#e8f0fe", "edgecolor": "#4a6fa5"}
    for i, (name, outs) in enumerate(stages):
        ax.text(i, 0.3, name, ha="center", va="center", fontsize=9, bbox=box)
        # Every other stage's files a row lower: long paths of neighbours never overlap.
        low = -0.25 - 0.55 * (i % 2)
        ax.text(i, low, "\n".join(outs), ha="center", va="top", fontsize=6.5, color="#333")
        if i:
            ax.annotate("", xy=(i - 0.42, 0.3), xytext=(i - 0.58, 0.3),
                        arrowprops={"arrowstyle": "->", "lw": 1.2})  # fmt: skip
    ax.set(xlim=(-0.6, len(stages) - 0.4), ylim=(-1.45, 0.6))
    ax.axis("off")
    ax.set_title(
        "dvc repro: each stage writes the files below it and reruns only when what it reads "
        "changes",
        fontsize=9,
    )
    _save(fig, path)


def _intervals(ax: plt.Axes, rows: list[tuple[str, float, float, float]], xlabel: str) -> None:
    for i, (_, mean, low, high) in enumerate(rows):
        style = _style(i)
        ax.errorbar(mean, i, xerr=[[mean - low], [high - mean]], fmt=style["marker"],
                    color=style["color"], capsize=4)  # fmt: skip
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.axvline(0, color="grey", lw=1)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)


def draw_comparison(path: Path) -> None:
    results = _read("benchmarks/comparison.json")
    if results is None:
        return
    rows = [
        (m, -c["last"]["mean"], -c["last"]["high"], -c["last"]["low"])
        for m, c in results["paired_vs_sokd"].items()
    ]
    rows.sort(key=lambda r: r[1])
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
    _intervals(ax, rows, "method − SOKD, test top-1 points (last epoch, 95 % paired interval)")
    fig.tight_layout()
    _save(fig, path)


def draw_user_path(path: Path) -> None:
    results = _read("benchmarks/user_path.json")
    if results is None:
        return
    cells = [(p, b) for p in results["params"]["pairs"] for b in results["params"]["budgets"]]
    fig, axes = plt.subplots(1, len(cells), figsize=(3.3 * len(cells), 2.6), sharey=True)
    for ax, (pair, budget) in zip(axes, cells, strict=True):
        test = results["minus_vanilla"][pair][budget]["test_top1"]
        _intervals(ax, [(o, c["mean"], c["low"], c["high"]) for o, c in test.items()], "")
        ax.set_title(f"{pair}, {budget}", fontsize=9)
    fig.supxlabel("objective − vanilla, test top-1 points (95 % paired interval)", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def draw_tradeoff(path: Path) -> None:
    ev, ve = _read("records/evaluate.json"), _read("records/verify.json")
    if ev is None or ve is None:
        return
    points = [("teacher (torch)", ev["teacher/file_bytes"], ev["teacher/top1"])]
    points += [
        (f"{k.split('/')[0]} student (torch)", ev[k.replace("top1", "file_bytes")], v)
        for k, v in ev.items()
        if k.endswith("/student/top1")
    ]
    points += [
        (f"shipped, {t} (onnxruntime)", ve[f"{t}/file_bytes"], ve[f"{t}/top1"])
        for t in ("onnx", "int8")
    ]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, (label, size, top1) in enumerate(points):
        ax.scatter(size / 1024, 100 * top1, s=60, label=label, **_style(i))
    ax.set(xscale="log", xlabel="file size (KiB, log)", ylabel="test top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    engines = [("torch", "torch eager fp32"), ("onnx", "ONNX fp32"), ("int8", "ONNX INT8")]
    for i, (key, label) in enumerate(engines):
        top1 = ve["torch/top1"] if key == "torch" else ve[f"{key}/top1"]
        bx.scatter(ve[f"latency/{key}_b1_median_ms"], 100 * top1, s=60, label=label,
                   **_style(i + len(points)))  # fmt: skip
    bx.set(xlabel="batch-1 latency, median (ms)", ylabel="test top-1 (%)")
    bx.grid(alpha=0.3)
    bx.legend(fontsize=7)
    fig.suptitle("The quickstart's networks: accuracy against size and latency", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def draw_budget_front(path: Path) -> None:
    """The budget preset's front, drawn as the card draws it (pipeline.shipping.front)."""
    from pipeline.shipping.front import plot_front

    f = _read("benchmarks/budget_front.json")
    if f is None:
        return
    selection = {"selection/objective": f["shipped"]}
    for name, st in f["students"].items():
        selection[f"selection/{name}/val_top1"] = st["val_top1"]
        selection[f"selection/{name}/int8_p90_ms"] = st["int8_p90_ms"]
    plot_front(path, selection, f["budget"].get("latency_ms", 0.0))


def draw_all(folder: Path) -> None:
    """Every figure into `folder`."""
    draw_budget_front(folder / "budget_front.png")
    draw_pipeline(folder / "pipeline.png")
    draw_comparison(folder / "comparison.png")
    draw_user_path(folder / "user_path.png")
    draw_tradeoff(folder / "tradeoff.png")
