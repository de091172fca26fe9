"""The user-path benchmark's report, from its DVC records (see benchmarks/user_path.py).

    python -m benchmarks.user_path_report

Reads every run (`runs/<pair>/<budget>/<seed>.json`, a row per objective), teacher and shipped
student, and writes `results.json`: every record, every paired comparison, the machine and the
params. Its tables (per pair and budget, each objective's validation and test top-1, mean ± std
over seeds, its paired difference from `vanilla` with a 95 % t interval, and what the pipeline
shipped, its margin over `vanilla` on validation and its INT8 file against the gate) are rendered
into docs/user-path.md by `make docs` (`summarise`).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

from benchmarks.paired import Paired, paired
from benchmarks.user_path import BENCH, Bench, load_bench
from pipeline.core.files import write_json
from pipeline.core.runtime import machine

BASELINE = "vanilla"


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def records(b: Bench) -> dict[str, Any]:
    """Every record the stages wrote, keyed pair -> budget -> ..."""
    raw = b.raw
    out: dict[str, Any] = {}
    for pair in raw["pairs"]:
        out[pair] = {"teacher": _read(BENCH / "teachers" / f"{pair}.json")}
        for budget in raw["budgets"]:
            folder = BENCH / "runs" / pair / budget
            by_seed = {s: _read(folder / f"{s}.json") for s in raw["seeds"]}
            runs = {o: {s: by_seed[s][o] for s in raw["seeds"]} for o in raw["objectives"]}
            ships = {s: _read(BENCH / "ship" / pair / budget / f"{s}.json") for s in raw["seeds"]}
            out[pair][budget] = {"runs": runs, "ship": ships}
    return out


def _points(runs: dict[int, dict[str, Any]], key: str) -> dict[int, float]:
    return {seed: 100 * row[key] for seed, row in runs.items()}


def versus_vanilla(runs: dict[str, dict[int, Any]], key: str) -> dict[str, Paired]:
    """Each objective minus vanilla, seed by seed (same seed: same init and batches)."""
    base = _points(runs[BASELINE], key)
    return {o: paired(_points(r, key), base) for o, r in runs.items() if o != BASELINE}


def _ms(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f}"


def _ci(c: Paired) -> str:
    return f"{c.mean:+.2f} [{c.low:+.2f}, {c.high:+.2f}] ({c.wins}/{c.n})"


def _budget_table(cell: dict[str, Any]) -> list[str]:
    runs = cell["runs"]
    val, test = versus_vanilla(runs, "val_top1"), versus_vanilla(runs, "test_top1")
    lines = [
        "| objective | val top-1 | test top-1 | − vanilla, val | − vanilla, test | wall s |",
        "|---|---|---|---|---|---|",
    ]
    for o, by_seed in runs.items():
        rows = list(by_seed.values())
        lines.append(
            f"| {o} | {_ms([100 * r['val_top1'] for r in rows])} | "
            f"{_ms([100 * r['test_top1'] for r in rows])} | "
            f"{_ci(val[o]) if o in val else '—'} | {_ci(test[o]) if o in test else '—'} | "
            f"{statistics.mean(r['wall_s'] for r in rows):.0f} |"
        )
    return lines


def _ship_lines(cell: dict[str, Any]) -> list[str]:
    lines = []
    for seed, s in cell["ship"].items():
        shipped = s["selection/objective"]
        margin = 100 * (s[f"selection/{shipped}/val_top1"] - s[f"selection/{BASELINE}/val_top1"])
        int8 = (
            f"INT8 test drop {100 * s['int8/test_top1_drop']:+.2f} points, agreement "
            f"{100 * s['int8/test_agreement']:.2f} %"
            if s["int8/test_agreement"] is not None
            else "no INT8 file"
        )
        gate = "passed" if s["gate/passed"] else f"FAILED ({s['gate/failures']})"
        notes = f"; notes: {s['selection/notes']}" if s["selection/notes"] else ""
        lines.append(
            f"- seed {seed}: ships `{shipped}` ({margin:+.2f} val points over vanilla); "
            f"{int8}; gate {gate}{notes}"
        )
    return lines


def _teacher_line(t: dict[str, Any], pair: dict[str, Any], budgets: list[str]) -> str:
    """The teacher's schedule, data and top-1, and how far it stands above `vanilla`."""
    above = []
    for budget in budgets:
        vanilla = [row["val_top1"] for row in pair[budget]["runs"][BASELINE].values()]
        above.append(f"{100 * (t['val_top1'] - statistics.mean(vanilla)):+.2f} ({budget})")
    photos = f" on {t['train_images']:,} photos" if "train_images" in t else ""
    return (
        f"Teacher: {t['epochs']} epochs{photos}, validation top-1 {100 * t['val_top1']:.2f} %, "
        f"test {100 * t['test_top1']:.2f} %; minus the `vanilla` student's mean validation "
        f"top-1: {', '.join(above)} points."
    )


def summarise(results: dict[str, Any]) -> str:
    """The report in Markdown, from results.json alone (rendered into docs/user-path.md)."""
    raw, recs = results["params"], results["records"]
    lines = [
        f"Top-1 in %, mean ± std over seeds {raw['seeds']}; *− vanilla*: the mean paired "
        "difference with its 95 % t interval and the seeds on which the objective is ahead. "
        "Validation chooses, test reports.",
    ]
    for pair in raw["pairs"]:
        t = recs[pair]["teacher"]
        networks = raw["pair"][pair]
        lines += [
            "",
            f"### {pair}: `{networks['teacher']}` → `{networks['student']}`",
            "",
            _teacher_line(t, recs[pair], raw["budgets"]),
        ]
        for budget in raw["budgets"]:
            cell = recs[pair][budget]
            lines += ["", f"**{budget}: {raw['budget'][budget]} student epochs**", ""]
            lines += [*_budget_table(cell), "", "Shipped (`export.objective: best`):", ""]
            lines += _ship_lines(cell)
    return "\n".join(lines) + "\n"


def report() -> None:
    b = load_bench()
    recs = records(b)
    paired_json = {
        pair: {
            budget: {
                key: {
                    o: dataclasses.asdict(c) | {"verdict": c.verdict}
                    for o, c in versus_vanilla(recs[pair][budget]["runs"], key).items()
                }
                for key in ("val_top1", "test_top1")
            }
            for budget in b.raw["budgets"]
        }
        for pair in b.raw["pairs"]
    }
    first = recs[b.raw["pairs"][0]][b.raw["budgets"][0]]["runs"][b.raw["objectives"][0]]
    where = next(iter(first.values())).get("machine") or machine()  # where the runs ran
    results = {"records": recs, "minus_vanilla": paired_json, "machine": where, "params": b.raw}
    write_json(BENCH / "results.json", results)
    print(summarise(results))


if __name__ == "__main__":
    report()
