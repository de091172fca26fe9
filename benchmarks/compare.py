"""What does SOKD buy? Every objective x seeds on one fixed budget, plus the SOKD ablation.

    python -m benchmarks.compare [--params benchmarks/compare_params.yaml] [--seeds 0 1 2]
                                 [--raw data/raw/fashion_mnist] [--out benchmarks]
    (or: make benchmark)

One prepared dataset and one teacher (seed 0) are shared by every run; each run then trains the
student with one objective and one seed, recording validation and test top-1 after every epoch.
Test accuracy is recorded, never used to choose anything: "best" is reported beside "last" only
because papers quote the best epoch. Finished runs are kept in <out>/runs/ and skipped when the
benchmark is started again with the same settings, so an interrupted benchmark resumes.

Writes <out>/results.json (one row per run), <out>/RESULTS.md (mean ± std per method, best and
last epoch side by side) and <out>/val_top1.png (validation top-1 per epoch, mean over seeds).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from torch import nn

from pipeline.batches import make_batches
from pipeline.config import Params, as_dict
from pipeline.data import load_prepared, prepare, save_prepared
from pipeline.files import write_json, write_text
from pipeline.inference import predict, topk_accuracy
from pipeline.models.staged import count_parameters
from pipeline.objectives import OBJECTIVES
from pipeline.params import load_params
from pipeline.reporting import plot_curves
from pipeline.runtime import Runtime, resolve_runtime, seed_everything
from pipeline.training import Extras, run_distill, run_teacher, save_run

ABLATION = [("teacher", "train"), ("random", "eval"), ("random", "train")]  # (teacher, eval) = sokd


def methods(params: Params) -> dict[str, tuple[str, Any]]:
    """Method label -> (objective, its params section): every objective, then the SOKD ablation."""
    table = {name: (name, params.distill.objective(name)) for name in OBJECTIVES.names()}
    for init, bn in ABLATION:
        cfg = dataclasses.replace(params.distill.objective("sokd"), bridge_init=init, teacher_bn=bn)
        table[f"sokd (bridge_init={init}, teacher_bn={bn})"] = ("sokd", cfg)
    return table


def _test_top1(test: Any, runtime: Runtime) -> Any:
    def measure(network: nn.Module) -> dict[str, float]:
        logits = predict(network, test, runtime)
        return {"test/top1": topk_accuracy(logits, test.labels.cpu(), 1)}

    return measure


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def prepare_shared(
    params: Params, raw: Path, work: Path, runtime: Runtime
) -> tuple[Path, Path, dict]:
    """The prepared data and the teacher every run shares (seed 0), built once and cached."""
    # `storage` changes where the images live, not what they are: not part of the key.
    data_key = {k: v for k, v in as_dict(params.prepare).items() if k != "storage"}
    key = _fingerprint(data_key, as_dict(params.train_teacher), params.seed)
    data_path, teacher_path = work / f"prepared-{key}.pt", work / f"teacher-{key}.pt"
    summary_path = work / f"teacher-{key}.json"
    if not data_path.is_file():
        seed_everything(params.seed)
        save_prepared(data_path, prepare(raw, params.prepare, params.seed))
    if not teacher_path.is_file():
        seed_everything(params.seed)
        test = make_batches(
            load_prepared(data_path, ("test",)), "test", 500, None, runtime.fp32(), 0
        )
        start = time.perf_counter()
        run = run_teacher(
            data_path,
            params.train_teacher,
            runtime,
            params.seed,
            Extras(on_epoch=_test_top1(test, runtime.fp32())),
        )
        save_run(run, {"teacher": teacher_path}, summary_path, work / f"teacher-{key}", params.seed)
        h = run.fit.history
        write_json(
            summary_path,
            {
                "test_top1_last": h[-1]["test/top1"],
                "test_top1_best": max(r["test/top1"] for r in h),
                "val_top1_last": h[-1]["val/top1"],
                "wall_s": time.perf_counter() - start,
                "params": count_parameters(run.networks["teacher"][1]),
            },
        )
    return data_path, teacher_path, json.loads(summary_path.read_text())


def run_one(
    label: str,
    objective: str,
    cfg: Any,
    seed: int,
    params: Params,
    data_path: Path,
    teacher_path: Path,
    runtime: Runtime,
) -> dict[str, Any]:
    """Train one student and return its row (accuracies as fractions)."""
    distill = dataclasses.replace(
        params.distill, settings={**params.distill.settings, objective: cfg}
    )
    test = make_batches(load_prepared(data_path, ("test",)), "test", 500, None, runtime.fp32(), 0)
    seed_everything(seed)
    start = time.perf_counter()
    run = run_distill(
        objective,
        data_path,
        teacher_path,
        distill,
        runtime,
        seed,
        Extras(on_epoch=_test_top1(test, runtime.fp32())),
    )
    wall = time.perf_counter() - start
    h = run.fit.history
    best = max(h, key=lambda r: r["test/top1"])
    return {
        "method": label,
        "objective": objective,
        "seed": seed,
        "test_top1_last": h[-1]["test/top1"],
        "test_top1_best": best["test/top1"],
        "best_epoch": int(best["epoch"]),
        "val_top1_last": h[-1]["val/top1"],
        "val_top1_best": run.fit.best_val_top1,
        "wall_s": wall,
        "images_per_s": run.metrics["time/images_per_s"],
        "trainable_params_added": run.metrics["params/trainable"] - run.metrics["params/student"],
        "val_top1_per_epoch": [r["val/top1"] for r in h],
        "test_top1_per_epoch": [r["test/top1"] for r in h],
    }


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(
    rows: list[dict[str, Any]],
    teacher: dict,
    params: Params,
    params_path: Path,
    command: str,
    wall_s: float,
) -> str:
    """RESULTS.md: per-method mean ± std, best and last epoch side by side, and the verdict."""
    by_method: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(row)
    stats = {
        m: {k: _mean_std([100 * r[k] for r in rs]) for k in ("test_top1_last", "test_top1_best")}
        for m, rs in by_method.items()
    }
    seeds = sorted({r["seed"] for r in rows})
    compute_s = teacher["wall_s"] + sum(r["wall_s"] for r in rows)
    d, t = params.distill, params.train_teacher
    lines = [
        "# What SOKD buys: the objectives side by side on one budget",
        "",
        f"Produced by `{command}`: {len(rows)} student runs (seeds {seeds}) and one teacher, "
        f"{compute_s / 60:.0f} min of training in all (this invocation: {wall_s / 60:.0f} min; "
        "finished runs are reused from `runs/`).",
        "",
        f"Setting: Fashion-MNIST, {params.prepare.train_size or 'all'} training images "
        f"({params.prepare.val_size} held out for validation), the 10,000 test images; teacher "
        f"{t.arch} ({t.train.epochs} epochs, seed {params.seed}, shared by every run), "
        f"student {d.arch}; "
        f"{d.train.epochs} student epochs, batch {d.train.batch_size}, SGD lr {d.train.optim.lr} "
        f"(momentum {d.train.optim.momentum}, weight decay {d.train.optim.weight_decay}), "
        f"{d.train.schedule.kind} schedule; every other number as in "
        f"`{params_path.as_posix()}`.",
        "",
        f"Teacher: test top-1 {100 * teacher['test_top1_last']:.2f} % (last epoch), "
        f"{teacher['params']:,} parameters.",
        "",
        "Test top-1 in %, mean ± std over seeds. *Last*: the final weights (what you ship). "
        "*Best*: the best epoch on the test set, as papers report it (for comparison only; "
        "nothing is selected with it).",
        "",
        "| method | last epoch | best epoch | best at epoch | images/s | extra trainable params "
        "| wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, rs in sorted(by_method.items(), key=lambda kv: -stats[kv[0]]["test_top1_last"][0]):
        last, best = stats[m]["test_top1_last"], stats[m]["test_top1_best"]
        lines.append(
            f"| {m} | {last[0]:.2f} ± {last[1]:.2f} | {best[0]:.2f} ± {best[1]:.2f} | "
            f"{statistics.mean(r['best_epoch'] for r in rs):.1f} | "
            f"{statistics.mean(r['images_per_s'] for r in rs):.0f} | "
            f"{rs[0]['trainable_params_added']:,} | "
            f"{statistics.mean(r['wall_s'] for r in rs):.0f} |"
        )
    lines += ["", "## SOKD against vanilla and KD (last epoch)", ""]
    sokd = stats.get("sokd", {}).get("test_top1_last")
    for base in ("vanilla", "kd"):
        if sokd is None or base not in stats:
            continue
        b = stats[base]["test_top1_last"]
        gap, combined = sokd[0] - b[0], sokd[1] + b[1]
        verdict = "beats" if gap > combined else "does not beat"
        per_seed = {r["seed"]: r["test_top1_last"] for r in by_method[base]}
        paired = [
            100 * (r["test_top1_last"] - per_seed[r["seed"]])
            for r in by_method["sokd"]
            if r["seed"] in per_seed
        ]
        wins = sum(d > 0 for d in paired)
        lines.append(
            f"- SOKD {sokd[0]:.2f} vs {base} {b[0]:.2f}: gap {gap:+.2f} points, combined std "
            f"{combined:.2f}: SOKD **{verdict}** {base} by more than the combined std. "
            f"Seed by seed (same seed, same student initialisation), SOKD − {base}: "
            f"{', '.join(f'{d:+.2f}' for d in paired)} (ahead on {wins} of {len(paired)})."
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("benchmarks/compare_params.yaml"))
    parser.add_argument("--raw", type=Path, default=Path("data/raw/fashion_mnist"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="*", help="labels to run (default: all)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks"))
    args = parser.parse_args()
    params = load_params(args.params)
    runtime = resolve_runtime(params.runtime)
    work, runs_dir = args.out / "work", args.out / "runs"
    start = time.perf_counter()
    data_path, teacher_path, teacher = prepare_shared(params, args.raw, work, runtime)
    table = methods(params)
    chosen = args.methods or list(table)
    rows = []
    for seed in args.seeds:
        for label in chosen:
            objective, cfg = table[label]
            key = _fingerprint(
                label,
                as_dict(cfg),
                as_dict(params.distill.train),
                params.distill.arch,
                teacher_path.name,
                seed,
                as_dict(params.runtime),
            )
            cached = runs_dir / f"{key}.json"
            if cached.is_file():
                rows.append(json.loads(cached.read_text()))
                continue
            row = run_one(label, objective, cfg, seed, params, data_path, teacher_path, runtime)
            write_json(cached, row)
            rows.append(row)
            print(
                f"{label:45s} seed {seed}: test top-1 last {100 * row['test_top1_last']:.2f} "
                f"best {100 * row['test_top1_best']:.2f}  ({row['wall_s']:.0f} s)",
                flush=True,
            )
    wall = time.perf_counter() - start
    command = "python -m benchmarks.compare " + " ".join(sys.argv[1:])
    write_json(
        args.out / "results.json",
        {
            "teacher": teacher,
            "rows": rows,
            "wall_s": wall,
            "params": str(args.params),
            "command": command.strip(),
        },
    )
    write_text(
        args.out / "RESULTS.md",
        summarise(rows, teacher, params, args.params, command.strip(), wall),
    )
    curves: dict[str, list[float]] = {}
    for label in chosen:
        per_seed = [r["val_top1_per_epoch"] for r in rows if r["method"] == label]
        curves[label] = [100 * statistics.mean(v) for v in zip(*per_seed, strict=True)]
    plot_curves(args.out / "val_top1.png", curves, "validation top-1 (%), mean over seeds")
    print((args.out / "RESULTS.md").read_text())


if __name__ == "__main__":
    main()
