"""Benchmarks as experiments of the pipeline's own dvc.yaml: queue the cells, then collect them.

    python -m benchmarks.experiments queue NAME [--only CELL ...]  # dvc exp run --queue, per cell
    dvc queue start                                                # DVC runs them, one at a time
    python -m benchmarks.experiments collect NAME [--wait]         # dvc exp show --json -> JSON

`make benchmark` (NAME comparison) and `make bench-user-path` (NAME user_path) do all three. A
benchmark is `benchmarks/NAME.yaml`: `pipeline`, the params overlay every cell starts from (a
preset), and `grid`, one mapping per axis from a value's name to its own overlay; each combination
of values is a cell, run as the experiment `NAME-<value>-<value>...` with exactly the `-S`
overrides that turn `params.yaml` into the defaults + the overlays, up to the stage `until`
names if it names one. DVC's run cache reuses the prepared data and the teacher across cells,
and `dvc exp show` lists every cell. Nothing here
trains, exports, quantizes or gates: the stages do; `collect` reads what they recorded (metrics
from `dvc exp show --json`, records/ and plots/ from each experiment's commit) into the JSON that
`make docs` renders (benchmarks/NAME.json). The user-path benchmark's photos (Fashion-MNIST as a
user's folders) are written by `queue` to benchmarks/work/, outside every DVC output.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchmarks.paired import Paired, paired
from pipeline.core.files import write_json

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
MODES = ("L", "RGB", "RGBA", "P")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if both else value
    return out


def definition(name: str, root: Path = ROOT) -> dict[str, Any]:
    path = root / "benchmarks" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (root / "benchmarks").glob("*.yaml"))
        raise SystemExit(f"error: no benchmark {name!r} ({path} is missing); known: {known}")
    return yaml.safe_load(path.read_text())


def cells(name: str, bench: dict[str, Any]) -> dict[str, tuple[dict[str, str], dict[str, Any]]]:
    """Every cell: its experiment name -> (its value on each axis, its whole params overlay)."""
    axes = bench["grid"]
    out = {}
    for values in itertools.product(*(list(axes[a]) for a in axes)):
        overlay = bench["pipeline"]
        for axis, value in zip(axes, values, strict=True):
            overlay = _merge(overlay, axes[axis][value] or {})
        names = [str(v) for v in values]
        out["-".join([name, *names])] = (dict(zip(axes, names, strict=True)), overlay)
    return out


def _dvc(*args: str, root: Path = ROOT) -> str:
    done = subprocess.run(["dvc", *args], cwd=root, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"error: dvc {' '.join(args[:3])} failed: {done.stderr.strip()[-400:]}")
    return done.stdout


# --- queue ---------------------------------------------------------------------------------------


def write_photos(raw: Path, out: Path, per_class: dict[str, int]) -> dict[str, int]:
    """Fashion-MNIST's product photographs as a user's class folders (`train/`, and `val/` from
    its test split): PNG and JPEG files of 28 to 112 pixels, grey, RGB, RGBA and palette."""
    from PIL import Image
    from torchvision.datasets import FashionMNIST

    rng = np.random.default_rng(0)
    counts = {}
    for folder_name, train, key in (
        ("train", True, "train_per_class"),
        ("val", False, "test_per_class"),
    ):
        ds = FashionMNIST(str(raw), train=train, download=False)
        counts[folder_name] = 0
        for label, name in enumerate(ds.classes):
            folder = out / folder_name / name.replace("/", "-")
            folder.mkdir(parents=True, exist_ok=True)
            picks = np.flatnonzero(ds.targets.numpy() == label)[: per_class[key]]
            for i, index in enumerate(picks):
                side = int(rng.integers(28, 113))
                grey = Image.fromarray(ds.data[index].numpy()).resize((side, side), Image.BICUBIC)
                mode = MODES[i % len(MODES)]
                image = grey.convert(mode) if mode != "P" else grey.convert("RGB").convert("P")
                suffix = ".jpg" if mode in ("L", "RGB") and i % 2 else ".png"
                image.save(folder / f"{i:05d}{suffix}")
                counts[folder_name] += 1
    return counts


def queue(name: str, only: list[str], root: Path = ROOT) -> list[str]:
    """Queue every cell (or those in `only`) as an experiment; returns their names."""
    from pipeline.core.config import read_yaml
    from pipeline.core.template import preset_overrides

    bench = definition(name, root)
    if "photos" in bench:  # the user's folders, written once, outside every DVC output
        photos = root / "benchmarks" / "work" / name / "photos"
        if not (photos / "val").is_dir():
            print(write_photos(root / "data/raw/fashion_mnist", photos, bench["photos"]))
        bench["pipeline"] = _merge(bench["pipeline"], {"prepare": {"folder": str(photos)}})
    todo = {n: c for n, c in cells(name, bench).items() if not only or n in only}
    if unknown := sorted(set(only) - set(todo)):
        raise SystemExit(
            f"error: {name} has no cells {unknown}; its cells: {list(cells(name, bench))}"
        )
    current = read_yaml(root / "params.yaml")
    # Every cell's overrides first: a typo in any cell stops the queue before the first is queued.
    args = {n: preset_overrides(overlay, current) for n, (_, overlay) in todo.items()}
    # A cell queued again replaces its experiment. Not with `exp run --force`: that also forces
    # every stage to run, where DVC's run cache should serve the data and the teacher.
    if again := sorted(set(args) & set(experiments(root))):
        _dvc("exp", "remove", *again, root=root)
    until = [bench["until"]] if "until" in bench else []  # the last stage a cell needs
    for exp, overrides in args.items():
        sets = [a for o in overrides for a in ("-S", o)]
        _dvc("exp", "run", "--queue", "-n", exp, *sets, *until, root=root)
        print(f"queued {exp}")
    return list(args)


# --- collect -------------------------------------------------------------------------------------


def _wait(root: Path) -> None:
    while any(w in _dvc("queue", "status", root=root) for w in ("Queued", "Running")):
        time.sleep(30)


def experiments(root: Path = ROOT, all_commits: bool = False) -> dict[str, dict[str, Any]]:
    """The current commit's experiments by name (every commit's, the newest of a name first:
    `all_commits`): rev, params, metrics (failed ones: error)."""
    shown = json.loads(_dvc("exp", "show", "--json", *(["-A"] if all_commits else []), root=root))
    out = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for rev in exp["revs"]:
                data = rev.get("data") or {}
                metrics = {
                    path: entry.get("data", {})
                    for path, entry in (data.get("metrics") or {}).items()
                }
                out.setdefault(
                    rev.get("name") or exp.get("name"),
                    {
                        "rev": rev["rev"],
                        "metrics": metrics,
                        "error": rev.get("error") or data.get("status") == "Failed",
                    },
                )
    return out


def read_at(rev: str, path: str, root: Path = ROOT) -> Any:
    """A file as an experiment's commit holds it: JSON, or CSV rows."""
    text = subprocess.run(
        ["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    return list(csv.DictReader(io.StringIO(text))) if path.endswith(".csv") else json.loads(text)


def ship_files(cell: str, out: Path, root: Path = ROOT) -> dict[str, Path]:
    """The shipped checkpoint and the prepared data of a finished cell, copied out of DVC's cache
    by `dvc.api` (for the INT8 studies: benchmarks.int8_margin, benchmarks.int8_fallback)."""
    import shutil

    import dvc.api

    rev = experiments(root)[cell]["rev"]
    files = {"student": out / "student.pt", "data": out / "prepared.pt"}
    out.mkdir(parents=True, exist_ok=True)
    for path, target in (
        ("models/student.pt", files["student"]),
        ("data/prepared.pt", files["data"]),
    ):
        with (
            dvc.api.open(path, repo=str(root), rev=rev, mode="rb") as src,
            target.open("wb") as dst,
        ):
            shutil.copyfileobj(src, dst)
    return files


def _val_curve(rows: list[dict[str, str]], network: str) -> list[float]:
    return [float(r["top1"]) for r in rows if r["network"] == network]


def comparison_row(rev: str, axes: dict[str, str], overlay: dict[str, Any], root: Path) -> dict:
    """One student of the comparison: test top-1 at the last and best epoch, speed, its curve."""
    objective = overlay["distill"]["objectives"][0]
    run = read_at(rev, f"records/distill/{objective}.json", root)
    return {
        "method": axes["method"],
        "objective": objective,
        "seed": overlay["distill"]["seed"],
        "test_top1_last": run["test/top1_last"],
        "test_top1_best": run["test/top1_best"],
        "best_epoch": run["test/best_epoch"],
        "val_top1_last": run["val/top1_last"],
        "val_top1_best": run["val/top1_best"],
        "wall_s": run["time/train_s"],
        "images_per_s": run["time/images_per_s"],
        "trainable_params_added": run["params/trainable"] - run["params/student"],
        "machine": read_at(rev, "records/profile.json", root)["profile/machine"],
        "val": _val_curve(read_at(rev, "plots/evaluate/validation.csv", root), objective),
    }


def _machine(verify: dict[str, Any]) -> dict[str, Any]:
    return {k.removeprefix("machine/"): v for k, v in verify.items() if k.startswith("machine/")}


def _teacher(rev: str, overlay: dict[str, Any], root: Path) -> dict[str, Any]:
    evaluation = read_at(rev, "records/evaluate.json", root)
    return {
        "arch": overlay["train_teacher"]["arch"],
        "epochs": overlay["train_teacher"]["train"]["epochs"],
        "train_images": read_at(rev, "metrics/prepare.json", root)["images/train"],
        "val_top1": evaluation["teacher/val_top1_final"],
        "test_top1": evaluation["teacher/top1"],
        "wall_s": evaluation["teacher/time_train_s"],
        "params": evaluation["teacher/params"],
    }


def user_path_cell(rev: str, overlay: dict[str, Any], root: Path) -> dict[str, Any]:
    """Every student of one pair x budget x seed, and what the pipeline shipped."""
    evaluation, verified = (
        read_at(rev, "records/evaluate.json", root),
        read_at(rev, "records/verify.json", root),
    )
    runs = {}
    for objective in overlay["distill"]["objectives"]:
        run = read_at(rev, f"records/distill/{objective}.json", root)
        runs[objective] = {
            "val_top1": run["val/top1_final"],
            "test_top1": evaluation[f"{objective}/student/top1"],
            "train_top1_last": run["train/top1_last"],
            "epochs": overlay["distill"]["train"]["epochs"],
            "wall_s": run["time/train_s"],
            "images_per_s": run["time/images_per_s"],
        }
    accepted = verified.get("int8/accepted", False)
    ship = read_at(rev, "records/export.json", root) | {
        "quantize": read_at(rev, "records/quantize.json", root),
        "int8/test_top1_drop": verified.get("int8/top1_drop") if accepted else None,
        "int8/test_agreement": verified.get("int8/agreement") if accepted else None,
        "gate/passed": verified["gate/passed"],
        "gate/failures": verified["gate/failures"],
    }
    return {
        "runs": runs,
        "ship": ship,
        "teacher": _teacher(rev, overlay, root),
        "machine": _machine(verified),
    }


def _collected(name: str, root: Path) -> dict[str, tuple[dict[str, str], dict[str, Any], str]]:
    """Each cell's axes, overlay and experiment rev; one line naming any missing or failed.
    A cell may have run on an earlier commit (a benchmark outlasts commits): its newest run."""
    shown, todo = experiments(root, all_commits=True), cells(name, definition(name, root))
    missing = [n for n in todo if n not in shown or shown[n]["error"]]
    if missing:
        raise SystemExit(
            f"error: {len(missing)} of {len(todo)} cells of {name} have no finished experiment "
            f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}); see `dvc queue "
            "status`, `dvc queue logs NAME`, then `python -m benchmarks.experiments queue "
            f"{name} --only ...`"
        )
    return {n: (axes, overlay, shown[n]["rev"]) for n, (axes, overlay) in todo.items()}


def collect_comparison(root: Path = ROOT) -> dict[str, Any]:
    bench, got = definition("comparison", root), _collected("comparison", root)
    rows = [comparison_row(rev, axes, overlay, root) for axes, overlay, rev in got.values()]
    methods = {}
    for axes, overlay, _ in got.values():
        objective = overlay["distill"]["objectives"][0]
        methods[axes["method"]] = [objective, overlay["distill"].get(objective, {})]
    first = next(iter(got.values()))
    teacher = _teacher(first[2], first[1], root)
    teacher["test_top1_last"] = teacher["test_top1"]
    versus = comparisons(rows, list(methods))
    return {
        "teacher": teacher,
        "methods": methods,
        "setting": setting(bench, teacher, sorted({r["seed"] for r in rows})),
        "rows": rows,
        "paired_vs_sokd": {m: {w: _as_dict(c) for w, c in cs.items()} for m, cs in versus.items()},
        "compute_min": (teacher["wall_s"] + sum(r["wall_s"] for r in rows)) / 60,
        "machine": rows[0]["machine"],
        "command": "make benchmark",
    }


def collect_user_path(root: Path = ROOT) -> dict[str, Any]:
    bench, got = definition("user_path", root), _collected("user_path", root)
    records: dict[str, Any] = {}
    for axes, overlay, rev in got.values():
        found = user_path_cell(rev, overlay, root)
        pair, seed = records.setdefault(axes["pair"], {}), overlay["distill"]["seed"]
        pair["teacher"] = found["teacher"]  # one per pair: the run cache's, in every cell
        budget = pair.setdefault(axes["budget"], {"runs": {}, "ship": {}})
        for objective, row in found["runs"].items():
            budget["runs"].setdefault(objective, {})[seed] = row
        budget["ship"][seed] = found["ship"]
    grid = bench["grid"]
    params = {
        "seeds": sorted({o["distill"]["seed"] for _, o, _ in got.values()}),
        "objectives": bench["pipeline"]["distill"]["objectives"],
        "pairs": list(grid["pair"]),
        "budgets": list(grid["budget"]),
        "pair": {
            p: {"teacher": o["train_teacher"]["arch"], "student": o["distill"]["arch"]}
            for p, o in grid["pair"].items()
        },
        "budget": {b: o["distill"]["train"]["epochs"] for b, o in grid["budget"].items()},
        "photos": bench["photos"],
        "pipeline": bench["pipeline"],
    }
    minus = {
        pair: {
            budget: {
                key: {o: _as_dict(c) for o, c in versus_vanilla(cell["runs"], key).items()}
                for key in ("val_top1", "test_top1")
            }
            for budget, cell in by.items()
            if budget != "teacher"
        }
        for pair, by in records.items()
    }
    return {
        "records": records,
        "minus_vanilla": minus,
        "machine": found["machine"],  # where the last cell ran
        "params": params,
    }


def collect_budget(name: str) -> Any:
    from benchmarks import budget_search

    return lambda root: budget_search.collect(name, root)


COLLECT = {
    "comparison": collect_comparison,
    "user_path": collect_user_path,
    "budget_fmnist": collect_budget("budget_fmnist"),
    "budget_photos": collect_budget("budget_photos"),
}


def front(experiment: str, root: Path = ROOT) -> dict[str, Any]:
    """What a budget chose from in one finished experiment (a preset with distill.candidates):
    every candidate as profile measured it, every trained student's validation and test top-1,
    the shipped one and why, and verify's budget verdict."""
    rev = experiments(root, all_commits=True)[experiment]["rev"]
    shown = subprocess.run(
        ["git", "show", f"{rev}:params.yaml"], cwd=root, capture_output=True, text=True, check=True
    )
    params = yaml.safe_load(shown.stdout)
    profile, chosen, evaluation, verified = (
        read_at(rev, f"records/{stage}.json", root)
        for stage in ("profile", "export", "evaluate", "verify")
    )
    keys = ("int8_p90_ms", "fp32_p90_ms", "bytes", "macs", "within_budget", "over_budget")
    candidates = {
        a: {k: profile[f"{a}/{k}"] for k in keys} for a in params["distill"]["candidates"]
    }
    names = [k.split("/", 1)[1].rsplit("/", 1)[0] for k in chosen if k.endswith("/val_top1")]
    students = {
        name: {
            "val_top1": chosen[f"selection/{name}/val_top1"],
            "test_top1": evaluation[f"{name}/student/top1"],
            "int8_p90_ms": chosen.get(f"selection/{name}/int8_p90_ms"),
            "why_not": chosen.get(f"selection/{name}/why_not", ""),
        }
        for name in names
        if name != "teacher"
    }
    return {
        "experiment": experiment,
        "budget": params["budget"],
        "candidates": candidates,
        "students": students,
        "shipped": chosen["selection/objective"],
        "reason": chosen["selection/reason"],
        "verify": {k: v for k, v in verified.items() if k.startswith(("budget/", "gate/"))},
        "machine": _machine(verified),
    }


def _as_dict(c: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(c) | {"verdict": c.verdict}


# --- the tables make docs renders: the comparison ----------------------------------------------

REFERENCE = "sokd"  # every other method is compared with it, seed by seed
MANY_SEEDS = 100  # beyond this a difference is of no practical size at this budget


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


def setting(bench: dict[str, Any], teacher: dict[str, Any], seeds: list[int]) -> str:
    """The benchmark's setting in words, from its definition (stored in the JSON)."""
    from pipeline.core.params import parse_params

    p = parse_params(bench["pipeline"])
    d, t = p.distill, p.train_teacher
    return (
        f"{p.prepare.dataset}, {p.prepare.train_size or 'all'} training images "
        f"({p.prepare.val_size} held out for validation), the full test set; one "
        f"{t.arch} teacher ({t.train.epochs} epochs, seed {t.seed}; test top-1 "
        f"{100 * teacher['test_top1_last']:.2f} %, {teacher['params']:,} parameters) shared by "
        f"every run; student {d.arch}, {d.train.epochs} epochs, batch {d.train.batch_size}, "
        f"SGD lr {d.train.optim.lr}, {d.train.schedule.kind} schedule. Seeds {seeds}: "
        "seed s is the same student initialisation and data order for every method. Every "
        "other number: `benchmarks/comparison.yaml`."
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


# --- the tables make docs renders: the user path ----------------------------------------------

BASELINE = "vanilla"


def _points(runs: dict[int, dict[str, Any]], key: str) -> dict[int, float]:
    return {seed: 100 * row[key] for seed, row in runs.items()}


def versus_vanilla(runs: dict[str, dict[int, Any]], key: str) -> dict[str, Paired]:
    """Each objective minus vanilla, seed by seed (same seed: same init and batches)."""
    base = _points(runs[BASELINE], key)
    return {o: paired(_points(r, key), base) for o, r in runs.items() if o != BASELINE}


def _ms(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f}"


def _ci_wins(c: Paired) -> str:
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
            f"{_ci_wins(val[o]) if o in val else '—'} | "
            f"{_ci_wins(test[o]) if o in test else '—'} | "
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("queue", help="queue every cell of a benchmark as a DVC experiment")
    q.add_argument("name", choices=sorted(COLLECT))
    q.add_argument("--only", nargs="+", default=[], metavar="CELL", help="these cells alone")
    c = sub.add_parser("collect", help="its experiments' results into benchmarks/NAME.json")
    c.add_argument("name", choices=sorted(COLLECT))
    c.add_argument("--wait", action="store_true", help="first wait for `dvc queue` to finish")
    c.add_argument("--out", type=Path, help="write here instead of benchmarks/NAME.json")
    c.add_argument(
        "--partial", action="store_true", help="budget_*: the finished cells, the rest listed"
    )
    f = sub.add_parser("front", help="one finished experiment's budget front, as JSON")
    f.add_argument("experiment", help="its name in `dvc exp show` (e.g. budget_fashion_mnist)")
    f.add_argument("--out", type=Path, required=True)
    f.add_argument("--root", type=Path, default=ROOT, help="the repository that ran it")
    args = parser.parse_args(argv)
    if args.command == "front":
        write_json(args.out, front(args.experiment, args.root.resolve()))
        return 0
    if args.command == "queue":
        queue(args.name, args.only)
        return 0
    if args.wait:
        _wait(ROOT)
    if args.partial and not args.name.startswith("budget_"):
        raise SystemExit("error: --partial is for the budget benchmarks (budget_*) alone")
    if args.partial:
        from benchmarks import budget_search

        results = budget_search.collect(args.name, ROOT, partial=True)
    else:
        results = COLLECT[args.name](ROOT)
    write_json(args.out or BENCHMARKS / f"{args.name}.json", results)
    if args.name == "comparison":
        print(table(results) + "\n" + verdicts(results))
    elif args.name.startswith("budget_"):
        from benchmarks import budget_search

        print(budget_search.table(results))
    else:
        print(summarise(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
