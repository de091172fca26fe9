"""The path most users take: their own photos in class folders, torchvision or timm networks.

    make bench-user-path     (= cd benchmarks/user_path && dvc repro)

`benchmarks/user_path/` is a DVC project of its own (like `benchmarks/comparison`). Its
`params.yaml` holds the photos, the teacher/student pairs, the student budgets, the objectives,
the seeds, and the pipeline overlay every run starts from; its `dvc.yaml` runs:

    photos    Fashion-MNIST written as a user's folders      -> work/photos/{train,val}/<class>/
              and more photos for the teachers               -> work/photos/teacher/<class>/
    prepare   the pipeline's `prepare` on them               -> work/prepared.pt
              the same splits, the teacher photos added to training -> work/teacher_prepared.pt
    teacher   one teacher per pair                           -> work/<pair>/teacher.pt, teachers/
    run       per pair x budget x seed: one student per objective, in one process (a stage
              launch costs as much as a short student)          -> runs/<pair>/<budget>/<s>.json
    ship      per pair x budget x seed: the student `export` would ship (best on validation),
              its ONNX and INT8 files (`quantize` with the default gate), and the gate on test
                                                             -> ship/<pair>/<budget>/<seed>.json
    summary   paired intervals                               -> results.json (docs: make docs)

The photos are Fashion-MNIST's product photographs (the only real images offline here) in ten
class folders, PNG and JPEG files of mixed sizes (28 to 112 pixels) and colour modes (L, RGB,
RGBA, palette). Every number is measured on the saved networks (after BatchNorm re-estimation):
validation top-1 chooses, test top-1 only reports.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pipeline.core.config import Params, read_yaml
from pipeline.core.errors import PipelineError
from pipeline.core.files import write_json
from pipeline.core.params import parse_params
from pipeline.core.runtime import machine, resolve_runtime, seed_everything
from pipeline.data.batches import make_batches
from pipeline.data.datasets import load_prepared, open_image, prepare, save_prepared
from pipeline.models.checkpoint import load_checkpoint
from pipeline.shipping.int8 import quantize_int8
from pipeline.shipping.onnx import export_onnx
from pipeline.shipping.selection import choose_student
from pipeline.shipping.verification import verify
from pipeline.training.inference import predict, topk_accuracy
from pipeline.training.runs import run_distill, run_teacher, save_run

BENCH = Path("benchmarks/user_path")
MODES = ("L", "RGB", "RGBA", "P")


PHOTO_SETS = {  # folder under work/photos: (Fashion-MNIST split, params.yaml count)
    "train": (True, "train_per_class"),  # the user's training photos
    "val": (False, "test_per_class"),  # the user's test photos (the pipeline's `val/` folder)
    "teacher": (True, "teacher_per_class"),  # more photos, for the teacher only (after "train")
}


def write_photos(raw: Path, out: Path, per_class: dict[str, int]) -> dict[str, int]:
    """Fashion-MNIST as a user's class folders: mixed sizes, colour modes and file formats.

    `teacher` photos come from the training images after the first `train_per_class` of each
    class: a teacher that has seen more than the user's folder, as a pretrained one has, and
    never the students' validation or test photos."""
    from torchvision.datasets import FashionMNIST

    rng = np.random.default_rng(0)
    counts = dict.fromkeys(PHOTO_SETS, 0)
    for folder_name, (train, key) in PHOTO_SETS.items():
        ds = FashionMNIST(str(raw), train=train, download=False)
        skip = per_class["train_per_class"] if folder_name == "teacher" else 0
        for label, name in enumerate(ds.classes):
            folder = out / folder_name / name.replace("/", "-")
            folder.mkdir(parents=True, exist_ok=True)
            picks = np.flatnonzero(ds.targets.numpy() == label)[skip : skip + per_class[key]]
            for i, index in enumerate(picks):
                side = int(rng.integers(28, 113))
                grey = Image.fromarray(ds.data[index].numpy()).resize((side, side), Image.BICUBIC)
                mode = MODES[i % len(MODES)]
                image = grey.convert(mode) if mode != "P" else grey.convert("RGB").convert("P")
                suffix = ".jpg" if mode in ("L", "RGB") and i % 2 else ".png"
                image.save(folder / f"{i:05d}{suffix}")
                counts[folder_name] += 1
    return counts


def with_teacher_photos(prepared: dict[str, Any], folder: Path, size: int, resize: str) -> dict:
    """`prepared` with the photos of `folder/<class>/` added to its training split (validation,
    test and normalisation unchanged): the teacher's data."""
    from torchvision.transforms.functional import pil_to_tensor

    files = [
        (label, path)
        for label, name in enumerate(prepared["classes"])
        for path in sorted((folder / name).iterdir())
    ]
    images = torch.stack([pil_to_tensor(open_image(path, size, resize)) for _, path in files])
    labels = torch.tensor([label for label, _ in files], dtype=torch.int64)
    train = prepared["train"]
    return prepared | {
        "train": {
            "images": torch.cat([train["images"], images]),
            "labels": torch.cat([train["labels"], labels]),
        }
    }


@dataclass(frozen=True)
class Bench:
    """The benchmark's params.yaml, read and validated."""

    raw: dict[str, Any]

    @property
    def work(self) -> Path:
        return BENCH / "work"

    def params(self, pair: str, budget: str | None = None, seed: int = 0) -> Params:
        """The pipeline params of one pair (its teacher), or of one student run."""
        raw = json.loads(json.dumps(self.raw["pipeline"]))  # a deep copy
        networks = self.raw["pair"][pair]
        raw.setdefault("train_teacher", {})["arch"] = networks["teacher"]
        distill = raw.setdefault("distill", {})
        distill |= {"arch": networks["student"], "seed": seed}
        distill["objectives"] = list(self.raw["objectives"])
        if budget is not None:
            distill.setdefault("train", {})["epochs"] = self.raw["budget"][budget]
        return parse_params(raw)

    def run_dir(self, pair: str, budget: str, seed: int) -> Path:
        """Where the students of one pair, budget and seed are saved: <objective>/student.pt."""
        return self.work / pair / budget / str(seed)


def load_bench(bench: Path = BENCH) -> Bench:
    b = Bench(read_yaml(bench / "params.yaml"))
    for pair in b.raw["pairs"]:  # every combination validated before the first run
        for budget in b.raw["budgets"]:
            b.params(pair, budget)
    return b


def _test_top1(network: torch.nn.Module, spec: Any, runtime: Any, data: Any) -> float:
    batches = make_batches(data, "test", 256, None, runtime, 0, spec)
    return topk_accuracy(predict(network, batches, runtime), batches.labels.cpu(), 1)


def cmd_photos(b: Bench, raw: Path) -> None:
    counts = write_photos(raw, b.work / "photos", b.raw["photos"])
    print(
        f"wrote {counts['train']} training and {counts['val']} test photos, "
        f"and {counts['teacher']} more for the teachers"
    )


def cmd_prepare(b: Bench) -> None:
    p = b.params(b.raw["pairs"][0])
    seed_everything(p.seed)
    prepared = prepare(b.work / "photos", p.prepare, p.seed)
    save_prepared(b.work / "prepared.pt", prepared)
    folder, cfg = b.work / "photos" / "teacher", p.prepare
    teacher = with_teacher_photos(prepared, folder, cfg.image_size, cfg.resize)
    save_prepared(b.work / "teacher_prepared.pt", teacher)


def cmd_teacher(b: Bench, pair: str) -> None:
    p = b.params(pair)
    runtime = resolve_runtime(p.runtime)
    start = time.perf_counter()
    data = b.work / "teacher_prepared.pt"  # the students' splits, more training photos
    run = run_teacher(data, p.train_teacher, runtime)
    wall = time.perf_counter() - start
    save_run(run, {"teacher": b.work / pair / "teacher.pt"}, b.work / pair / "teacher.json", b.work)
    test = load_prepared(data, ("test",))
    network = run.networks["teacher"][1]
    row = {
        "arch": p.train_teacher.arch,
        "epochs": p.train_teacher.train.epochs,
        "train_images": len(run.data.splits["train"].labels),
        "val_top1": run.metrics["val/top1_final"],
        "test_top1": _test_top1(network, run.specs["teacher"], runtime.fp32(), test),
        "wall_s": wall,
    }
    write_json(BENCH / "teachers" / f"{pair}.json", row)


def cmd_run(b: Bench, pair: str, budget: str, seed: int) -> None:
    """Every objective's student of one pair, budget and seed (same initialisation and batches)."""
    p = b.params(pair, budget, seed)
    runtime = resolve_runtime(p.runtime)
    data, teacher = b.work / "prepared.pt", b.work / pair / "teacher.pt"
    test = load_prepared(data, ("test",))
    rows = {}
    for objective in p.distill.objectives:
        start = time.perf_counter()
        run = run_distill(objective, data, teacher, p.distill, runtime)
        wall = time.perf_counter() - start
        out = b.run_dir(pair, budget, seed) / objective
        save_run(run, {"student": out / "student.pt"}, out / "metrics.json", out)
        network = run.networks["student"][1]
        rows[objective] = {
            "val_top1": run.metrics["val/top1_final"],
            "test_top1": _test_top1(network, run.specs["student"], runtime.fp32(), test),
            "train_top1_last": run.metrics["train/top1_last"],
            "epochs": p.distill.train.epochs,
            "wall_s": wall,
            "images_per_s": run.metrics["time/images_per_s"],
            "machine": machine(),
        }
    write_json(BENCH / "runs" / pair / budget / f"{seed}.json", rows)


def cmd_ship(b: Bench, pair: str, budget: str, seed: int) -> None:
    """What the pipeline would ship from this pair, budget and seed, and its INT8 gate."""
    p = b.params(pair, budget, seed)
    runs = b.run_dir(pair, budget, seed)
    teacher = b.work / pair / "teacher.pt"
    selection, chosen = choose_student(runs, p.distill.objectives, teacher, p.export)
    data = load_prepared(b.work / "prepared.pt", ("train", "val", "test"))
    ckpt = load_checkpoint(chosen)
    with tempfile.TemporaryDirectory(prefix="ship-") as scratch:
        fp32, int8 = Path(scratch) / "student.onnx", Path(scratch) / "student.int8.onnx"
        export_onnx(ckpt, fp32, p.export)
        try:
            quantized = quantize_int8(fp32, int8, data, p.quantize, p.verify.int8, p.seed)
            report, _ = verify(ckpt, [fp32, int8], data, p.verify)
        except PipelineError as err:  # a missed gate is a result here, recorded with its message
            quantized, report = {"error": str(err)}, {"gate/passed": False}
    row = selection.metrics() | {
        "quantize": quantized,
        "int8/test_top1_drop": report.get("int8/top1_drop"),
        "int8/test_agreement": report.get("int8/agreement"),
        "gate/passed": report["gate/passed"],
        "gate/failures": report.get("gate/failures", quantized.get("error", "")),
    }
    write_json(BENCH / "ship" / pair / budget / f"{seed}.json", row)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    photos = sub.add_parser("photos", help="write the photos as class folders")
    photos.add_argument("--raw", type=Path, default=Path("data/raw/fashion_mnist"))
    sub.add_parser("prepare", help="the data split")
    teacher = sub.add_parser("teacher", help="one pair's teacher")
    run = sub.add_parser("run", help="one student per objective")
    ship = sub.add_parser("ship", help="the shipped student's ONNX, INT8 and gate")
    for command in (teacher, run, ship):
        command.add_argument("--pair", required=True)
    for command in (run, ship):
        command.add_argument("--budget", required=True)
        command.add_argument("--seed", type=int, required=True)
    args = parser.parse_args(argv)
    b = load_bench()
    if args.command == "photos":
        cmd_photos(b, args.raw)
    elif args.command == "prepare":
        cmd_prepare(b)
    elif args.command == "teacher":
        cmd_teacher(b, args.pair)
    elif args.command == "run":
        cmd_run(b, args.pair, args.budget, args.seed)
    else:
        cmd_ship(b, args.pair, args.budget, args.seed)


if __name__ == "__main__":
    main()
