"""The comparison benchmark's report, computed from its DVC records (see benchmarks/compare.py).

    python -m benchmarks.compare_report [--bench benchmarks/comparison]

Reads every run's record (`runs/<method>/<seed>.json`) and the teacher's, and writes
`results.json` (the setting, every row, every paired comparison, the machine) and `val_top1.png`
(validation top-1 per epoch, mean over seeds). Its tables (mean ± std, best and last epoch, SOKD
minus each method with a 95 % paired t interval, the verdicts) are rendered into
docs/comparison.md from results.json by `make docs` (`table`, `verdicts` below).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

from benchmarks.compare import BENCH, Bench, load_bench
from benchmarks.paired import Paired, paired
from pipeline.core.files import write_json
from pipeline.core.runtime import machine
from pipeline.training.reporting import plot_curves

REFERENCE = "sokd"  # every other method is compared with it, seed by seed
MANY_SEEDS = 100  # beyond this a difference is of no practical size at this budget


def read_rows(bench: Path, b: Bench) -> list[dict[str, Any]]:
    """Every run's record, with its method, objective and seed, in params order."""
    rows = []
    for label, (objective, _) in b.methods.items():
        for seed in b.seeds:
            path = bench / "runs" / label / f"{seed}.json"
            row = json.loads(path.read_text())
            curve = json.loads(path.with_suffix(".curve.json").read_text())
            rows.append({"method": label, "objective": objective, "seed": seed, **row} | curve)
    return rows


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _by_seed(rows: list[dict[str, Any]], label: str, key: str) -> dict[int, float]:
    return {r["seed"]: 100 * r[key] for r in rows if r["method"] == label}


def comparisons(rows: list[dict[str, Any]], labels: list[str]) -> dict[str, dict[str, Paired]]:
    """SOKD minus each other method, seed by seed, at the last and at the best epoch."""
    return {
        label: {
            when: paired(_by_seed(rows, REFERENCE, key), _by_seed(rows, label, key))
            for when, key in (("last", "test_top1_last"), ("best", "test_top1_best"))
        }
        for label in labels
        if label != REFERENCE
    }


def _ci(c: dict[str, float]) -> str:
    return f"{c['mean']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}]"


def _verdict_line(label: str, c: Paired) -> str:
    head = {
        "beats": f"SOKD beats {label}",
        "loses to": f"SOKD loses to {label}",
    }.get(c.verdict, f"no detectable difference between SOKD and {label}")
    line = (
        f"- **{head}**: SOKD − {label} = {c.mean:+.2f} points at the last epoch, 95 % CI "
        f"[{c.low:+.2f}, {c.high:+.2f}], SOKD ahead on {c.wins} of {c.n} seeds."
    )
    if c.low <= 0 <= c.high:
        needed = c.seeds_needed()
        if needed is not None and needed <= MANY_SEEDS:
            line += (
                f" Inside the noise at this budget; with this spread, a difference of this size "
                f"would need about {needed} seeds to show."
            )
        else:
            line += (
                f" Equivalent at this budget: a difference this small would take more than "
                f"{MANY_SEEDS} seeds to show."
            )
    return line


def setting(b: Bench, teacher: dict[str, Any]) -> str:
    """The benchmark's setting in words, from its params (stored in results.json)."""
    p, d, t = b.params, b.params.distill, b.params.train_teacher
    return (
        f"{p.prepare.dataset}, {p.prepare.train_size or 'all'} training images "
        f"({p.prepare.val_size} held out for validation), the full test set; one "
        f"{t.arch} teacher ({t.train.epochs} epochs, seed {t.seed}; test top-1 "
        f"{100 * teacher['test_top1_last']:.2f} %, {teacher['params']:,} parameters) shared by "
        f"every run; student {d.arch}, {d.train.epochs} epochs, batch {d.train.batch_size}, "
        f"SGD lr {d.train.optim.lr}, {d.train.schedule.kind} schedule. Seeds {list(b.seeds)}: "
        "seed s is the same student initialisation and data order for every method. Every "
        "other number: `benchmarks/comparison/params.yaml`."
    )


def table(results: dict[str, Any]) -> str:
    """Mean ± std, best and last, SOKD minus each method with its 95 % paired interval."""
    rows, methods = results["rows"], results["methods"]
    by = {m: [r for r in rows if r["method"] == m] for m in methods}
    stats = {
        m: {k: _mean_std([100 * r[k] for r in by[m]]) for k in ("test_top1_last", "test_top1_best")}
        for m in methods
    }
    versus = results["paired_vs_sokd"]
    lines = [
        "| method | objective, settings | last epoch | best epoch | SOKD − method, last | "
        "SOKD − method, best | SOKD ahead | images/s | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in sorted(methods, key=lambda m: -stats[m]["test_top1_last"][0]):
        objective, settings = methods[m]
        how = objective + "".join(f", {k}={v}" for k, v in settings.items())
        last, best = stats[m]["test_top1_last"], stats[m]["test_top1_best"]
        c = versus.get(m)
        lines.append(
            f"| {m} | {how} | {last[0]:.2f} ± {last[1]:.2f} | {best[0]:.2f} ± {best[1]:.2f} | "
            + (
                f"{_ci(c['last'])} | {_ci(c['best'])} | {c['last']['wins']}/{c['last']['n']} | "
                if c
                else "— | — | — | "
            )
            + f"{statistics.mean(r['images_per_s'] for r in by[m]):.0f} | "
            f"{statistics.mean(r['wall_s'] for r in by[m]):.0f} |"
        )
    return "\n".join(lines) + "\n"


def verdicts(results: dict[str, Any]) -> str:
    """One line per method: SOKD beats it, loses to it, or no detectable difference."""
    return (
        "\n".join(
            _verdict_line(m, Paired(**{k: v for k, v in c["last"].items() if k != "verdict"}))
            for m, c in results["paired_vs_sokd"].items()
        )
        + "\n"
    )


def report(bench: Path) -> None:
    b = load_bench(bench)
    rows = read_rows(bench, b)
    teacher = json.loads((bench / "teacher.json").read_text())
    versus = comparisons(rows, list(b.methods))
    results = {
        "teacher": teacher,
        "methods": {m: [objective, settings] for m, (objective, settings) in b.methods.items()},
        "setting": setting(b, teacher),
        "rows": rows,
        "paired_vs_sokd": {
            m: {when: dataclasses.asdict(c) | {"verdict": c.verdict} for when, c in cs.items()}
            for m, cs in versus.items()
        },
        "compute_min": (teacher["wall_s"] + sum(r["wall_s"] for r in rows)) / 60,
        # Where the runs were measured (the summary only reads their records).
        "machine": rows[0].get("machine", machine()),
        "command": "make benchmark",
    }
    write_json(bench / "results.json", results)
    curves = {}
    for m in b.methods:
        per_seed = [r["val"] for r in rows if r["method"] == m]
        curves[m] = [100 * statistics.mean(v) for v in zip(*per_seed, strict=True)]
    plot_curves(bench / "val_top1.png", curves, "validation top-1 (%), mean over seeds")
    print(table(results) + "\n" + verdicts(results))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, default=BENCH, help="the benchmark's DVC project")
    report(parser.parse_args(argv).bench)


if __name__ == "__main__":
    main()
