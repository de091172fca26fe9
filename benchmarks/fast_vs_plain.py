"""Does the fast path change accuracy? SOKD on the quickstart, plain path vs fast path, over seeds.

    python -m benchmarks.fast_vs_plain [--seeds 0 1 2] [--out benchmarks/fast_vs_plain.json]

Uses the pipeline's own prepared data and teacher (run `make repro` first) and `params.yaml`'s
distill settings; only the path differs. Plain: DataLoader with per-sample PIL transforms, fp32,
default layout, teacher in train mode (`teacher_bn: train`, the reference behaviour). Fast: the
runtime of params.yaml. Reports the student's validation (best, last) and test top-1, mean ± std.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch

from benchmarks.speed import plain_runtime
from pipeline.core.params import load_params
from pipeline.core.runtime import machine, resolve_runtime
from pipeline.data.batches import make_batches
from pipeline.data.datasets import load_prepared
from pipeline.training.inference import predict, topk_accuracy
from pipeline.training.runs import run_distill


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/prepared.pt"))
    parser.add_argument("--teacher", type=Path, default=Path("models/teacher.pt"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/fast_vs_plain.json"))
    args = parser.parse_args()
    params = load_params(args.params)
    fast = resolve_runtime(params.runtime)
    paths = {
        "plain": (
            plain_runtime(fast.device, args.workers),
            dataclasses.replace(
                params.distill,
                settings={
                    **params.distill.settings,
                    "sokd": dataclasses.replace(
                        params.distill.objective("sokd"), teacher_bn="train"
                    ),
                },
            ),
        ),
        "fast": (fast, params.distill),
    }
    test = load_prepared(args.data, ("test",))
    rows = []
    for seed in args.seeds:
        for name, (runtime, cfg) in paths.items():
            start = time.perf_counter()
            cfg = dataclasses.replace(cfg, seed=seed)
            run = run_distill("sokd", args.data, args.teacher, cfg, runtime)
            wall = time.perf_counter() - start
            student = run.networks["student"][1]
            batches = make_batches(test, "test", 500, None, runtime.fp32(), seed=0)
            top1 = topk_accuracy(predict(student, batches, runtime.fp32()), batches.labels.cpu(), 1)
            rows.append(
                {
                    "path": name,
                    "seed": seed,
                    "test_top1": top1,
                    "val_top1_last": run.fit.last_val_top1,
                    "val_top1_best": run.fit.best_val_top1,
                    "images_per_s": run.metrics["time/images_per_s"],
                    "wall_s": wall,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for name in paths:
        mine = [r for r in rows if r["path"] == name]
        for key in ("test_top1", "val_top1_last", "val_top1_best", "images_per_s"):
            values = [r[key] for r in mine]
            summary[f"{name}/{key}/mean"] = statistics.mean(values)
            summary[f"{name}/{key}/std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"machine": machine(), "seeds": args.seeds, "rows": rows, "summary": summary}, indent=2
        )
        + "\n"
    )
    print("\n| path | test top-1 | val top-1 (last) | val top-1 (best) | images/s |")
    print("|---|---|---|---|---|")
    for name in paths:
        cells = [
            f"{100 * summary[f'{name}/{k}/mean']:.2f} ± {100 * summary[f'{name}/{k}/std']:.2f}"
            for k in ("test_top1", "val_top1_last", "val_top1_best")
        ]
        print(f"| {name} | {' | '.join(cells)} | {summary[f'{name}/images_per_s/mean']:.0f} |")
    print(f"\nwrote {args.out}; torch {torch.__version__}")


if __name__ == "__main__":
    main()
