"""Why SOKD can lose to vanilla on a short run: the first steps, traced, and variants over seeds.

    python -m benchmarks.short_runs trace [--out benchmarks/short_runs.json]
    python -m benchmarks.short_runs grid SETTINGS.yaml [--out ...]

The photos are the user-path benchmark's (Fashion-MNIST as ten class folders, 300 training and
100 test photos a class, 32 pixels); the teacher trains 15 epochs, the students 3 (lr 0.05, a
warm-up epoch, batch 64, random-resized crops), as a user's first try would.

`trace` runs one SOKD student without the KL warm-up (the paper) and with it (the default) and
records, every step, each loss term, and every few steps the validation top-1 of the student (with
batch statistics: a MobileNetV3's running statistics lag in eval mode until they are re-estimated)
and of the bridge (trunk + bridge). `grid` trains each variant (an objective and its settings) at
each seed and records the validation and test top-1 of the saved student.
Writes JSON, prints a table.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import torch
import yaml

import pipeline.training.engine as engine
from benchmarks.experiments import write_photos
from pipeline.core.files import write_json
from pipeline.core.params import parse_params
from pipeline.core.runtime import machine, resolve_runtime
from pipeline.data.batches import make_batches
from pipeline.data.datasets import load_prepared, prepare, save_prepared
from pipeline.models.checkpoint import load_checkpoint
from pipeline.training.inference import predict, topk_accuracy
from pipeline.training.runs import run_distill, run_teacher, save_run

WORK = Path("benchmarks/work/short_runs")
TRAIN = {
    "batch_size": 64,
    "optim": {"lr": 0.05},
    "schedule": {"warmup_epochs": 1},
    "augment": {"kind": "random_resized_crop", "scale": [0.35, 1.0]},
}


def overlay(teacher: str, student: str, epochs: int = 3) -> dict[str, Any]:
    prepare_cfg = {"dataset": "imagefolder", "image_size": 32, "resize": "shorter_side"}
    return {
        "prepare": {**prepare_cfg, "val_size": 500},
        "train_teacher": {"arch": teacher, "train": {**TRAIN, "epochs": 15}},
        "distill": {"arch": student, "train": {**TRAIN, "epochs": epochs}},
    }


def set_up(teacher: str, student: str, raw: Path) -> tuple[Path, Path]:
    """The prepared photos and a trained teacher (made once, then reused)."""
    photos, data = WORK / "photos", WORK / "prepared.pt"
    p = parse_params(overlay(teacher, student))
    if not photos.exists():
        write_photos(raw, photos, {"train_per_class": 300, "test_per_class": 100})
    if not data.exists():
        save_prepared(data, prepare(photos, p.prepare, p.seed))
    path = WORK / f"teacher-{teacher.replace(':', '_')}.pt"
    if not path.exists():
        run = run_teacher(data, p.train_teacher, resolve_runtime(p.runtime))
        save_run(run, {"teacher": path}, path.with_suffix(".json"), WORK)
    return data, path


def _batch_stats_top1(network: torch.nn.Module, val: Any, runtime: Any) -> float:
    was = network.training
    network.train()  # batch statistics: the running ones lag on a short run
    with torch.no_grad():
        top1 = topk_accuracy(predict(network, val, runtime), val.labels, 1)
    network.train(was)
    return top1


class Recorder:
    """Wraps `engine.train_step`: each step's loss terms, and every `every` steps the student's
    (batch statistics) and the bridge's validation top-1."""

    def __init__(self, val: Any, every: int) -> None:
        self.val, self.every, self.rows = val, every, []
        self.original = engine.train_step

    def __call__(self, fn: Any, *args: Any) -> Any:
        out = self.original(fn, *args)
        objective, runtime = fn.__self__, args[-2]
        row = {k: v.item() for k, v in {"loss": out.loss, **out.parts}.items()}
        if len(self.rows) % self.every == 0:
            row["val/student"] = _batch_stats_top1(objective.student, self.val, runtime)
            bridge = objective.extra_networks()["improved_teacher"].network
            logits = predict(bridge, self.val, runtime)
            row["val/bridge"] = topk_accuracy(logits, self.val.labels, 1)
        self.rows.append(row)
        return out


def trace(teacher: str, student: str, raw: Path, every: int) -> dict[str, Any]:
    data, teacher_path = set_up(teacher, student, raw)
    runs = {}
    for label, settings in (("sokd_no_warmup", {"warmup_epochs": 0.0}), ("sokd", {})):
        raw_params = overlay(teacher, student)
        raw_params["distill"]["sokd"] = settings
        p = parse_params(raw_params)
        runtime = resolve_runtime(p.runtime)
        splits = load_prepared(data, ("train", "val"))
        spec = load_checkpoint(teacher_path).spec
        recorder = Recorder(make_batches(splits, "val", 256, None, runtime, 0, spec), every)
        engine.train_step = recorder
        try:
            run = run_distill("sokd", data, teacher_path, p.distill, runtime)
        finally:
            engine.train_step = recorder.original
        runs[label] = {"steps": recorder.rows, "val_top1_final": run.metrics["val/top1_final"]}
    return runs


def grid(settings: dict[str, Any], raw: Path) -> dict[str, Any]:
    data, teacher_path = set_up(settings["teacher"], settings["student"], raw)
    test = load_prepared(data, ("test",))
    results: dict[str, Any] = {}
    for label, (objective, knobs) in settings["variants"].items():
        for seed in settings["seeds"]:
            raw_params = overlay(settings["teacher"], settings["student"], settings["epochs"])
            raw_params["distill"] |= {"objectives": [objective], objective: knobs, "seed": seed}
            p = parse_params(raw_params)
            runtime = resolve_runtime(p.runtime)
            run = run_distill(objective, data, teacher_path, p.distill, runtime)
            batches = make_batches(test, "test", 256, None, runtime.fp32(), 0, run.specs["student"])
            logits = predict(run.networks["student"][1], batches, runtime.fp32())
            row = {
                "val": run.metrics["val/top1_final"],
                "test": topk_accuracy(logits, batches.labels, 1),
            }
            results.setdefault(label, []).append(row)
            print(label, seed, row, flush=True)
    return results


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("trace")
    t.add_argument("--teacher", default="timm:resnet18")
    t.add_argument("--student", default="timm:mobilenetv3_small_100")
    t.add_argument("--every", type=int, default=5)
    g = sub.add_parser("grid")
    g.add_argument("settings", type=Path)
    for command in (t, g):
        command.add_argument("--raw", type=Path, default=Path("data/raw/fashion_mnist"))
        command.add_argument("--out", type=Path, default=Path("benchmarks/short_runs.json"))
    args = parser.parse_args()
    report = json.loads(args.out.read_text()) if args.out.is_file() else {}
    report["machine"] = machine()
    if args.command == "trace":
        report["trace"] = {"teacher": args.teacher, "student": args.student}
        report["trace"] |= trace(args.teacher, args.student, args.raw, args.every)
    else:
        settings = yaml.safe_load(args.settings.read_text())
        report.setdefault("grids", {})[settings["name"]] = settings | {
            "results": grid(settings, args.raw)
        }
    write_json(args.out, report)


if __name__ == "__main__":
    main()
