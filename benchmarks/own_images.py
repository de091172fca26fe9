"""The path most users take, end to end: their own photos in class folders, torchvision or timm
networks, `dvc repro` with the gate.

    python -m benchmarks.own_images [--out benchmarks/own_images.json] [--pairs torchvision timm]

The photos are Fashion-MNIST's (real product photographs, the only real images offline here),
written as a user's folders would be: `train/<class>/` and `val/<class>/`, seven classes, PNG and
JPEG files of mixed sizes (28 to 112 pixels) and colour modes (L, RGB, RGBA, palette). Each pair
runs the real pipeline (`dvc repro` in a copy of this project) with `prepare.image_size: 64`,
`resize: shorter_side`, random-resized crops, 3 epochs per network from scratch, and the gate at
`verify.min_top1`. For each student it then measures test top-1 in eval mode (running BatchNorm
statistics, what is deployed) and with batch statistics (train-mode BatchNorm, batches of 256):
a large gap is the failure BatchNorm re-estimation exists to prevent. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image

from pipeline.batches import make_batches
from pipeline.checkpoint import load_checkpoint
from pipeline.data import load_prepared
from pipeline.files import write_json
from pipeline.inference import topk_accuracy
from pipeline.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]
CLASSES = (0, 1, 2, 3, 5, 7, 8)  # T-shirt, trouser, pullover, dress, sandal, sneaker, bag
MODES = ("L", "RGB", "RGBA", "P")
PAIRS = {
    "torchvision": ("tv_resnet18", "tv_mobilenet_v3_small"),
    "timm": ("timm:resnet18", "timm:mobilenetv3_small_100"),
}
MIN_TOP1 = 0.60


def write_photos(raw: Path, out: Path, per_class: int, seed: int = 0) -> dict[str, int]:
    """Fashion-MNIST images as a user's class folders: mixed sizes, modes and file formats."""
    from torchvision.datasets import FashionMNIST

    rng = np.random.default_rng(seed)
    counts = {"train": 0, "val": 0}
    for split, train, n in (("train", True, per_class), ("val", False, per_class // 4)):
        ds = FashionMNIST(str(raw), train=train, download=False)
        for label in CLASSES:
            folder = out / split / ds.classes[label].replace("/", "-")
            folder.mkdir(parents=True, exist_ok=True)
            picks = np.flatnonzero(ds.targets.numpy() == label)[:n]
            for i, index in enumerate(picks):
                side = int(rng.integers(28, 113))
                grey = Image.fromarray(ds.data[index].numpy()).resize((side, side), Image.BICUBIC)
                mode = MODES[i % len(MODES)]
                image = grey.convert(mode) if mode != "P" else grey.convert("RGB").convert("P")
                suffix = ".jpg" if mode in ("L", "RGB") and i % 2 else ".png"
                image.save(folder / f"{i:05d}{suffix}")
                counts[split] += 1
    return counts


def project_copy(work: Path) -> Path:
    """A git repository with this project's pipeline, ready for `dvc repro`."""
    repo = work / "repo"
    repo.mkdir(parents=True)
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    ignore = shutil.ignore_patterns("__pycache__", "cache", "tmp", "config.local")
    for folder in ("pipeline", "stages", ".dvc"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=ignore)
    return repo


def overlay(teacher: str, student: str) -> dict[str, Any]:
    train = {
        "epochs": 3,
        "batch_size": 64,
        "optim": {"lr": 0.05},
        "schedule": {"warmup_epochs": 1},
        "augment": {"kind": "random_resized_crop", "scale": [0.35, 1.0]},
    }
    prepare = {"dataset": "imagefolder", "image_size": 64, "resize": "shorter_side"}
    distill = {"arch": student, "weights": "", "seed": 0, "train": train}
    distill["objectives"] = ["vanilla", "sokd"]
    return {
        "seed": 0,
        "runtime": {},
        "prepare": {**prepare, "val_size": 300},
        "train_teacher": {"arch": teacher, "train": train},
        "distill": {**distill, "vanilla": {}, "sokd": {}},
        "evaluate": {},
        "export": {"objective": "sokd"},
        "quantize": {},
        "verify": {"min_top1": MIN_TOP1, "int8": {"max_top1_drop": 0.05, "min_agreement": 0.9}},
    }


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b"}
    env |= {"GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)


def batch_statistics_top1(repo: Path, objective: str) -> dict[str, float]:
    """Test top-1 of a student in eval mode and with train-mode (batch-statistics) BatchNorm."""
    ckpt = load_checkpoint(repo / "models" / "distill" / objective / "student.pt")
    data = load_prepared(repo / "data" / "prepared.pt", ("test",))
    # Batch statistics need batches that mix the classes: the test split is in folder order.
    test = data.splits["test"]
    order = torch.randperm(len(test.labels), generator=torch.Generator().manual_seed(0))
    data = dataclasses.replace(data, splits={"test": test.subset(order)})
    cpu = Runtime(torch.device("cpu"), amp_dtype=None, channels_last=False)
    batches = make_batches(data, "test", 256, None, cpu, 0, ckpt.spec)
    model = ckpt.build()
    out = {}
    for mode in ("eval", "batch_statistics"):
        model.eval()
        if mode == "batch_statistics":  # BatchNorm alone on batch statistics; dropout stays off
            for m in model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.train()
        with torch.no_grad():
            logits = torch.cat([model(x) for x, _ in batches])
        out[mode] = topk_accuracy(logits, batches.labels, 1)
    return out


def run_pair(name: str, photos: Path, work: Path) -> dict[str, Any]:
    teacher, student = PAIRS[name]
    repo = project_copy(work / name)
    (repo / "params.yaml").write_text(yaml.safe_dump(overlay(teacher, student), sort_keys=False))
    shutil.copytree(photos, repo / "data" / "raw" / "imagefolder")
    for args in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "photos"]):
        _run(args, repo)
    start = time.perf_counter()
    done = _run(["dvc", "repro"], repo)
    seconds = time.perf_counter() - start
    result: dict[str, Any] = {"teacher": teacher, "student": student, "repro_s": round(seconds, 1)}
    result["gate_passed"] = done.returncode == 0
    if done.returncode != 0:
        result["error"] = (done.stderr.strip().splitlines() or ["?"])[-1]
    evaluate = json.loads((repo / "metrics" / "evaluate.json").read_text())
    result["teacher_top1"] = evaluate["teacher/top1"]
    for objective in ("vanilla", "sokd"):
        trained = json.loads((repo / "metrics/distill" / f"{objective}.json").read_text())
        kept = {k: v for k, v in trained.items() if k.startswith("bn/") or k == "val/top1_final"}
        result[objective] = {**batch_statistics_top1(repo, objective), **kept}
    verify = repo / "metrics" / "verify.json"
    if verify.is_file():
        v = json.loads(verify.read_text())
        result |= {"onnx_top1": v["onnx/top1"], "int8_top1": v["int8/top1"]}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "own_images.json")
    parser.add_argument("--raw", type=Path, default=ROOT / "data" / "raw" / "fashion_mnist")
    parser.add_argument("--per-class", type=int, default=400, help="training photos per class")
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="own-images-") as tmp:
        work = Path(tmp)
        counts = write_photos(args.raw, work / "photos", args.per_class)
        print(f"wrote {counts['train']} training and {counts['val']} test photos", flush=True)
        results = {}
        for name in args.pairs:
            results[name] = run_pair(name, work / "photos", work)
            print(f"{name}: {json.dumps(results[name])}", flush=True)
    report = {
        "machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__},
        "photos": counts,
        "min_top1": MIN_TOP1,
        "pairs": results,
    }
    write_json(args.out, report)
    print(
        "\n| pair | teacher | student | objective | eval-mode top-1 | batch-statistics top-1 |"
        " gate |\n|---|---|---|---|---|---|---|"
    )
    for name, r in results.items():
        for objective in ("vanilla", "sokd"):
            s = r[objective]
            gate = "passed" if r["gate_passed"] else "FAILED"
            print(
                f"| {name} | {r['teacher']} {100 * r['teacher_top1']:.1f}% | {r['student']} | "
                f"{objective} | {100 * s['eval']:.1f}% | {100 * s['batch_statistics']:.1f}% | "
                f"{gate} |"
            )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
