"""The budget benchmark: what a budget's search ships, against the student a user without one gets
and against the best student the search trained (read on test, which nothing chose on).

    python -m benchmarks.experiments queue budget_fmnist   # and budget_photos; then
    dvc queue start
    python -m benchmarks.experiments collect budget_fmnist --wait  # benchmarks/budget_fmnist.json

Each cell (budget x seed) is an experiment of the pipeline; this reads what its stages recorded:
profile's verdicts, every trained student's validation and test top-1 and training time, what
export shipped and why, verify's budget and gate. The search's cost is profile's time, every
within-budget student's training and export's budget check, against training `distill.arch` alone.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from benchmarks.experiments import _as_dict, _machine, _mean_std, read_at
from benchmarks.paired import paired
from pipeline.core.students import arch_folder


def cell(rev: str, overlay: dict[str, Any], root: Path) -> dict[str, Any]:
    """One finished experiment: candidates, trained students, the shipped file, the cost."""
    profile, chosen, evaluation, verified = (
        read_at(rev, f"records/{stage}.json", root)
        for stage in ("profile", "export", "evaluate", "verify")
    )
    distill = overlay["distill"]
    within = [a for a in distill["candidates"] if profile[f"{a}/within_budget"]]
    students = {}
    for objective in distill["objectives"]:
        trained = read_at(rev, f"records/distill/{objective}.json", root)
        for arch in within:  # records name a student by its folder (timm:x -> timm_x)
            folder = arch_folder(arch)
            name = f"{objective}/{folder}"
            students[name] = {
                "arch": arch,
                "val_top1": chosen[f"selection/{name}/val_top1"],
                "test_top1": evaluation[f"{name}/student/top1"],
                "train_s": trained[f"{folder}/time/train_s"],
                "why_not": chosen.get(f"selection/{name}/why_not", "shipped"),
            }
    shipped = chosen["selection/objective"]
    file = verified["budget/file"]
    return {
        "budget": {k: v for k, v in overlay["budget"].items() if v},
        "default_arch": distill["arch"],
        "candidates": {
            a: {k: profile[f"{a}/{k}"] for k in ("int8_p90_ms", "bytes", "macs", "within_budget")}
            for a in distill["candidates"]
        },
        "students": students,
        "shipped": shipped,
        "shipped_file": file,
        "shipped_test_top1": verified["int8/top1" if file == "int8" else "onnx/top1"],
        "budget_passed": verified["budget/passed"],
        "gate_passed": verified["gate/passed"],
        "export_latency_p90_ms": chosen.get("selection/latency_p90_ms"),  # export's reading
        "verify_latency_p90_ms": verified["budget/latency_p90_ms"],
        "verify_bytes": verified["budget/bytes"],
        "profile_s": profile["profile/time_s"],
        "select_s": chosen["selection/time_s"],
        "machine": _machine(verified),
    }


def collect(name: str, root: Path, partial: bool = False) -> dict[str, Any]:
    """Every cell's figures and the summary; `partial`: the finished cells alone, the others
    listed under `missing` (a benchmark cut short), where a full collect stops at the first."""
    from benchmarks.experiments import _collected, cells, definition, experiments

    bench = definition(name, root)
    todo = cells(name, bench)
    if partial:
        shown = experiments(root, all_commits=True)
        done = {n: c for n, c in todo.items() if n in shown and not shown[n]["error"]}
        got = {n: (*c, shown[n]["rev"]) for n, c in done.items()}
    else:
        got = _collected(name, root)
    found = {
        n: {"budget_name": axes["budget"], "seed": overlay["distill"].get("seed", 0)}
        | cell(rev, overlay, root)
        for n, (axes, overlay, rev) in got.items()
    }
    return {
        "benchmark": name,
        "pipeline": bench["pipeline"],
        "budgets": {b: o["budget"] for b, o in bench["grid"]["budget"].items()},
        "cells": found,
        "missing": [n for n in todo if n not in got],
        "summary": summary(found),
        "machine": next(iter(found.values()))["machine"],
    }


def _default_train_s(cells: dict[str, Any]) -> dict[int, float]:
    """Per seed, training `distill.arch` alone: its time in a cell of that seed that trained it
    (the same seed and schedule train the same student whatever the budget), for cells where the
    budget excluded it."""
    out = {}
    for c in cells.values():
        for s in c["students"].values():
            if s["arch"] == c["default_arch"]:
                out[c["seed"]] = s["train_s"]
    return out


def summary(cells: dict[str, Any]) -> dict[str, Any]:
    """Per budget, over seeds: met budget, shipped vs default and vs oracle (paired), cost."""
    single = _default_train_s(cells)
    out: dict[str, Any] = {}
    for budget in dict.fromkeys(c["budget_name"] for c in cells.values()):
        rows = [c for c in cells.values() if c["budget_name"] == budget]
        shipped, oracle, default, cost = {}, {}, {}, []
        for c in rows:
            seed, students = c["seed"], c["students"]
            shipped[seed] = 100 * students[c["shipped"]]["test_top1"]
            oracle[seed] = 100 * max(s["test_top1"] for s in students.values())
            plain = [s for s in students.values() if s["arch"] == c["default_arch"]]
            if plain:  # the default student is within budget, so trained in this cell
                default[seed] = 100 * plain[0]["test_top1"]
            search_s = c["profile_s"] + c["select_s"] + sum(s["train_s"] for s in students.values())
            # Training the default alone: in this cell where it was trained (the same load on
            # the machine), else in another cell of the seed.
            alone = plain[0]["train_s"] if plain else single.get(seed)
            if alone:
                cost.append(search_s / alone)
        out[budget] = {
            "seeds": len(rows),
            "met": sum(c["budget_passed"] and c["gate_passed"] for c in rows),
            "trained": statistics.mean(len(c["students"]) for c in rows),
            "candidates": len(next(iter(rows))["candidates"]),
            "shipped": sorted({c["shipped"] for c in rows}),
            "shipped_test_top1": _mean_std(list(shipped.values())),
            "oracle_test_top1": _mean_std(list(oracle.values())),
            "shipped_minus_oracle": _as_dict(paired(shipped, oracle)) if len(rows) > 1 else None,
            "default_within_budget": len(default),
            "default_test_top1": _mean_std(list(default.values())) if default else None,
            "shipped_minus_default": (
                _as_dict(paired({s: shipped[s] for s in default}, default))
                if len(default) > 1
                else None
            ),
            "cost_vs_one_student": _mean_std(cost) if cost else None,
        }
    return out


def _pm(ms: tuple[float, float] | list[float] | None, unit: str = "") -> str:
    return "—" if ms is None else f"{ms[0]:.2f} ± {ms[1]:.2f}{unit}"


def _ci(c: dict[str, Any] | None) -> str:
    if c is None:
        return "—"
    return f"{c['mean']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}]"


def _limits(budget: dict[str, Any]) -> str:
    names = {"latency_ms": "p90 ≤ {} ms", "max_bytes": "≤ {:,} bytes", "max_macs": "≤ {:,} MACs"}
    return ", ".join(names[k].format(v) for k, v in budget.items() if k in names and v)


def table(results: dict[str, Any]) -> str:
    """The benchmark's table in Markdown, from its JSON alone (docs/budget.md renders it)."""
    lines = [
        "| budget | met (budget and gate) | trained of candidates | shipped | shipped test top-1 "
        "| − oracle | default within budget | − default | search cost (× one student) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in results["summary"].items():
        shipped = ", ".join(f"`{x}`" for x in s["shipped"])
        lines.append(
            f"| {name}: {_limits(results['budgets'][name])} | {s['met']}/{s['seeds']} | "
            f"{s['trained']:.1f} of {s['candidates']} | {shipped} | "
            f"{_pm(s['shipped_test_top1'], ' %')} | {_ci(s['shipped_minus_oracle'])} | "
            f"{s['default_within_budget']}/{s['seeds']} | {_ci(s['shipped_minus_default'])} | "
            f"{_pm(s['cost_vs_one_student'])} |"
        )
    return "\n".join(lines) + "\n"
