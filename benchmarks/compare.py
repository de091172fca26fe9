"""What does SOKD buy against the distillers users pick today? Methods x seeds as a DVC pipeline.

    make benchmark        (= cd benchmarks/comparison && dvc repro)

`benchmarks/comparison/` is its own DVC project (a subrepo: the main `dvc repro` never runs it).
Its `params.yaml` holds the budget (a pipeline params overlay under `pipeline:`), the seeds, and
the methods (an objective plus settings); its `dvc.yaml` runs, through the commands below:

    prepare   the data split, once            -> work/prepared.pt
    teacher   one teacher for every run       -> work/teacher.pt, teacher.json
    run       one student per method x seed   -> runs/<method>/<seed>.json (+ .curve.json)
    summary   the records above, paired       -> results.json, val_top1.png (docs: make docs)
              (python -m benchmarks.compare_report: a change to the report reruns no run)

so `dvc exp show` / `dvc metrics show` list every run, a changed method reruns only its runs, and an
interrupted benchmark resumes where it stopped. The student seed (`distill.seed`) is the run's
seed: the same seed is the same student initialisation and data order whatever the method, so
methods compare pair by pair. Test accuracy is recorded after every epoch and never used to
choose anything: "best" is reported beside "last" only because papers quote the best epoch.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from pipeline.core.config import Params, read_yaml
from pipeline.core.files import write_json
from pipeline.core.params import parse_params
from pipeline.core.runtime import Runtime, machine, resolve_runtime, seed_everything
from pipeline.data.batches import make_batches
from pipeline.data.datasets import load_prepared, prepare, save_prepared
from pipeline.models.staged import count_parameters
from pipeline.training.inference import predict, topk_accuracy
from pipeline.training.runs import Extras, run_distill, run_teacher, save_run

BENCH = Path("benchmarks/comparison")


@dataclass(frozen=True)
class Bench:
    """The benchmark's params.yaml, read and validated."""

    seeds: tuple[int, ...]
    methods: dict[str, tuple[str, dict[str, Any]]]  # label -> (objective, its settings)
    overlay: dict[str, Any]  # the pipeline params overlay: the budget
    params: Params

    def method_params(self, label: str, seed: int) -> tuple[str, Params]:
        """The objective of `label` and the pipeline params of its run with student seed `seed`."""
        objective, settings = self.methods[label]
        raw = json.loads(json.dumps(self.overlay))  # a deep copy
        distill = raw.setdefault("distill", {})
        distill[objective] = {**distill.get(objective, {}), **settings}
        distill["seed"] = seed
        return objective, parse_params(raw)


def load_bench(bench: Path) -> Bench:
    raw = read_yaml(bench / "params.yaml")
    table = raw.get("method", {})
    missing = [m for m in raw["methods"] if m not in table]
    if missing:
        raise SystemExit(f"error: {bench}/params.yaml: methods {missing} have no `method:` entry")
    methods = {m: (table[m]["objective"], dict(table[m].get("with", {}))) for m in raw["methods"]}
    b = Bench(tuple(raw["seeds"]), methods, raw.get("pipeline", {}), parse_params(raw["pipeline"]))
    for label in methods:  # every method's settings validated before the first run
        b.method_params(label, b.seeds[0])
    return b


def _test_top1(test: Any, runtime: Runtime) -> Callable[[nn.Module], dict[str, float]]:
    def measure(network: nn.Module) -> dict[str, float]:
        logits = predict(network, test, runtime)
        return {"test/top1": topk_accuracy(logits, test.labels.cpu(), 1)}

    return measure


def _test_batches(bench: Path, runtime: Runtime) -> Any:
    data = load_prepared(bench / "work" / "prepared.pt", ("test",))
    return make_batches(data, "test", 500, None, runtime.fp32(), 0)


def cmd_prepare(bench: Path, raw: Path) -> None:
    p = load_bench(bench).params
    seed_everything(p.seed)
    save_prepared(bench / "work" / "prepared.pt", prepare(raw, p.prepare, p.seed))


def cmd_teacher(bench: Path) -> None:
    p = load_bench(bench).params
    runtime = resolve_runtime(p.runtime)
    on_epoch = _test_top1(_test_batches(bench, runtime), runtime.fp32())
    start = time.perf_counter()
    run = run_teacher(bench / "work" / "prepared.pt", p.train_teacher, runtime, Extras(on_epoch))
    wall = time.perf_counter() - start
    work = bench / "work"
    save_run(run, {"teacher": work / "teacher.pt"}, work / "teacher-metrics.json", work)
    h = run.fit.history
    summary = {
        "test_top1_last": h[-1]["test/top1"],
        "test_top1_best": max(r["test/top1"] for r in h),
        "val_top1_last": h[-1]["val/top1"],
        "wall_s": wall,
        "params": count_parameters(run.networks["teacher"][1]),
    }
    write_json(bench / "teacher.json", summary)


def cmd_run(bench: Path, label: str, seed: int) -> None:
    b = load_bench(bench)
    objective, p = b.method_params(label, seed)
    runtime = resolve_runtime(p.runtime)
    on_epoch = _test_top1(_test_batches(bench, runtime), runtime.fp32())
    work = bench / "work"
    start = time.perf_counter()
    run = run_distill(
        objective, work / "prepared.pt", work / "teacher.pt", p.distill, runtime, Extras(on_epoch)
    )
    wall = time.perf_counter() - start
    h = run.fit.history
    best = max(h, key=lambda r: r["test/top1"])
    row = {
        "test_top1_last": h[-1]["test/top1"],
        "test_top1_best": best["test/top1"],
        "best_epoch": int(best["epoch"]),
        "val_top1_last": h[-1]["val/top1"],
        "val_top1_best": run.fit.best_val_top1,
        "wall_s": wall,
        "images_per_s": run.metrics["time/images_per_s"],
        "trainable_params_added": run.metrics["params/trainable"] - run.metrics["params/student"],
        "runtime": runtime.describe(),
        "machine": machine(),
    }
    out = bench / "runs" / label
    write_json(out / f"{seed}.json", row)
    curves = {k: [r[f"{k}/top1"] for r in h] for k in ("val", "test")}
    write_json(out / f"{seed}.curve.json", curves)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, default=BENCH, help="the benchmark's DVC project")
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="the data split")
    prep.add_argument("--raw", type=Path, default=Path("data/raw/fashion_mnist"))
    sub.add_parser("teacher", help="the shared teacher")
    run = sub.add_parser("run", help="one student: a method and a seed")
    run.add_argument("--method", required=True)
    run.add_argument("--seed", type=int, required=True)
    args = parser.parse_args(argv)
    if args.command == "prepare":
        cmd_prepare(args.bench, args.raw)
    elif args.command == "teacher":
        cmd_teacher(args.bench)
    else:
        cmd_run(args.bench, args.method, args.seed)


if __name__ == "__main__":
    main()
