"""One command that proves the GPU path: CUDA tests, speed, a timed SOKD epoch, NCCL, the pipeline.

    make gpu-check     # = PYTHONPATH=. python3 -m benchmarks.gpu_check --out benchmarks/gpu.json
    python -m benchmarks.gpu_check --cpu-dry-run --out /tmp/gpu.json   # every part, toy size, CPU

Parts, in order, each with a progress line (the order puts the parts with a fixed cost first and
the speed rows, which can trade their torch.compile columns for time, last):

1. tests     the CUDA tests (`pytest -m cuda`: bf16, fp16 with GradScaler, channels_last,
             torch.compile, both loaders, device checkpoints);
2. pipeline  the tiny profile's stages, in dvc.yaml's order, through `python -m stages` on the GPU,
             the onnxruntime gate included (the commands DVC resolved here: `make gpu-plan`
             writes benchmarks/gpu_stages.txt, and a test fails while it differs from dvc.yaml);
3. torchrun  a one-process `torchrun` run of `distill` (NCCL on a GPU: the process group and DDP
             are set up even for one process);
4. epoch     one timed SOKD epoch, WRN-40-2 -> WRN-16-2, 50,000 generated 32x32x3 images,
             100 classes, batch 128, the fast path (eager; compiled too where time allows), with
             peak memory;
5. speed     benchmarks.speed rows on the device: plain vs fast, with and without torch.compile,
             for the quickstart pair and WRN-40-2 -> WRN-16-2.

It runs from a plain checkout with torch, torchvision, onnx, onnxruntime, onnxscript, typer and
pytest (no dvc, no network, nothing installed): all data is generated. It writes one JSON file
(device, versions, every figure) and prints a table. Exit status: 0 when every part passed,
1 when a part failed (the JSON says which and why), 2 without a CUDA device (unless
--cpu-dry-run) or on bad usage.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from benchmarks.speed import (
    PAIRS,
    TIMED,
    fast_runtime,
    measure_pair_objective,
    plain_runtime,
    quickstart_params,
    synthetic_data,
)
from pipeline.core.config import Params
from pipeline.core.files import write_json
from pipeline.data.datasets import Prepared, Split
from pipeline.models import create_model
from pipeline.objectives import build_objective
from pipeline.training.engine import fit
from tests.helpers import write_fashion_mnist

ROOT = Path(__file__).resolve().parents[1]
CHECK_DEVICE_ENV = "SOKD_CHECK_DEVICE"  # read by tests/test_cuda.py
EPOCH_PAIR = ("wrn_40_2", "wrn_16_2")


@dataclass(frozen=True)
class Scale:
    """How big each part runs: the real check on a GPU, or the toy dry run on the CPU."""

    device: str
    pairs: tuple[str, ...]  # benchmarks.speed pairs
    compile_objectives: tuple[str, ...]  # speed rows that also get a torch.compile column
    steps: int  # timed steps per round in a speed row
    rounds: int
    workers: int  # DataLoader workers of the plain path
    epoch_images: int
    epoch_val_images: int
    compiled_epoch: bool


GPU = Scale("cuda", tuple(PAIRS), TIMED, 20, 3, 8, 50_000, 1_000, True)
DRY = Scale("cpu", ("quickstart",), ("vanilla",), 1, 1, 2, 256, 128, False)


class Clock:
    """The check's time budget: parts that can shrink ask how much is left."""

    def __init__(self, budget_s: float) -> None:
        self.start, self.budget_s = time.perf_counter(), budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget_s - self.elapsed()


def _first_line(text: str) -> str:
    """The line of a command's output that says why it failed: its `error:` line if any, else
    the last line naming an error, else the last line."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip("=- \t")]
    for wanted in (lambda ln: ln.startswith("error:"), lambda ln: "Error" in ln):
        found = [ln for ln in lines if wanted(ln)]
        if found:
            return found[-1][:240]
    return (lines or ["(no output)"])[-1][:240]


def _env(scale: Scale, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", **extra}
    if scale.device == "cpu":
        env[CHECK_DEVICE_ENV] = "cpu"
    return env


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[int, str]:
    """Run a command; (exit status, combined output). A timeout counts as a failure (124)."""
    try:
        done = subprocess.run(
            args, cwd=cwd, env=env, capture_output=True, text=True, timeout=max(timeout, 1)
        )
    except subprocess.TimeoutExpired as err:
        out = (err.stdout or b"") + (err.stderr or b"")
        text = out.decode(errors="replace") if isinstance(out, bytes) else str(out)
        return 124, text + f"\ntimed out after {timeout:.0f} s"
    return done.returncode, done.stdout + done.stderr


# --- part 1: the CUDA tests ----------------------------------------------------------------------


def part_tests(scale: Scale, work: Path, clock: Clock) -> dict[str, Any]:
    junit = work / "junit.xml"
    args = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider"]
    args += [f"--junitxml={junit}", str(ROOT / "tests")]
    code, output = _run(args, ROOT, _env(scale), clock.left())
    if not junit.is_file():
        raise RuntimeError(f"pytest wrote no report (exit {code}): {_first_line(output)}")
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = [
        case.get("name")
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    result = {**counts, "passed": counts["tests"] - counts["failures"] - counts["errors"]}
    result["passed"] -= counts["skipped"]
    if code != 0 or counts["tests"] == 0:
        why = failed or _first_line(output)
        raise PartFailedError(f"pytest exit {code}; failed: {why}", result)
    return result


# --- part 2: the tiny profile's stages, as dvc.yaml writes them ---------------------------------

PLAN = ROOT / "benchmarks" / "gpu_stages.txt"  # written here by `make gpu-plan`, with dvc


def resolve_plan(out: Path = PLAN) -> None:
    """The tiny profile's stage commands as DVC resolves them (`dvc repro --dry --force` in a
    scratch project), written to `out` for the GPU machine, which has no dvc."""
    with tempfile.TemporaryDirectory(prefix="gpu-plan-") as tmp:
        (Path(tmp) / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
        (Path(tmp) / "params.yaml").write_text(yaml.safe_dump(tiny_params("cuda")))
        env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
        for args in (["init", "--no-scm", "-q"], ["repro", "--dry", "--force"]):
            dvc = [sys.executable, "-m", "dvc", *args]
            done = subprocess.run(dvc, cwd=tmp, env=env, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"error: dvc {args[0]} failed: {_first_line(done.stderr)}")
    stages = re.findall(r"Running stage '([^']+)':\n> (.+)", done.stdout)
    lines = [f"{name}\t{cmd}" for name, cmd in stages]
    out.write_text(
        "# dvc.yaml's stages on tests/tiny_params.yaml (make gpu-plan)\n" + "\n".join(lines) + "\n"
    )


def stage_commands(plan: Path = PLAN) -> Iterator[tuple[str, list[str]]]:
    """(name, argv) of every stage in the plan, in DVC's order, `sokd` run as a module."""
    for line in plan.read_text().splitlines():
        if line and not line.startswith("#"):
            label, cmd = line.split("\t", 1)
            argv = shlex.split(cmd)
            yield label, [sys.executable, "-m", "stages", *argv[1:]] if argv[0] == "sokd" else argv


def tiny_params(device: str) -> dict[str, Any]:
    """The test suite's tiny profile on `device`, with the fast path's layout and precision."""
    params = yaml.safe_load((ROOT / "tests" / "tiny_params.yaml").read_text())
    params["runtime"].update(device=device, amp="auto", channels_last=True)
    return params


def part_pipeline(scale: Scale, work: Path, clock: Clock) -> dict[str, Any]:
    params = tiny_params(scale.device)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    write_fashion_mnist(work / "data" / "raw" / params["prepare"]["dataset"], 400, 120)
    seconds: dict[str, float] = {}
    for label, argv in stage_commands():
        start = time.perf_counter()
        code, output = _run(argv, work, _env(scale), clock.left())
        seconds[label] = round(time.perf_counter() - start, 2)
        if code != 0:
            why = f"{label} exit {code}: {_first_line(output)}"
            raise PartFailedError(why, {"stage_seconds": seconds})
    verify = yaml.safe_load((work / "records" / "verify.json").read_text())
    sokd = yaml.safe_load((work / "records" / "distill" / "sokd.json").read_text())
    return {
        "stage_seconds": seconds,
        "gate_passed": verify["gate/passed"],
        "sokd_val_top1": sokd["val/top1_last"],
        "onnx_top1": verify["onnx/top1"],
        "int8_top1": verify["int8/top1"],
        "max_abs_logit_diff": verify["onnx/max_abs_logit_diff"],
    }


# --- part 3: torchrun ---------------------------------------------------------------------------


def part_torchrun(scale: Scale, work: Path, clock: Clock) -> dict[str, Any]:
    """`distill` under a one-process torchrun, after part 2 left data and a teacher in `work`."""
    if not (work / "models" / "teacher.pt").is_file():
        raise RuntimeError("no teacher from the pipeline part to distill from")
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
    args += ["-m", "stages", "distill", "--objective", "sokd", "--data", "data/prepared.pt"]
    args += ["--teacher", "models/teacher.pt", "--out", "ddp/sokd", "--metrics", "ddp/sokd.json"]
    args += ["--live", "ddp/live"]
    start = time.perf_counter()
    code, output = _run(args, work, _env(scale), clock.left())
    if code != 0:
        raise RuntimeError(f"torchrun distill exit {code}: {_first_line(output)}")
    backend = re.search(r"torchrun: process \d+ of \d+, (\w+) backend", output)
    expected = "nccl" if scale.device == "cuda" else "gloo"
    found = backend.group(1) if backend else None
    metrics = yaml.safe_load((work / "ddp" / "sokd.json").read_text())
    result = {
        "backend": found,
        "seconds": round(time.perf_counter() - start, 2),
        "sokd_val_top1": metrics["val/top1_last"],
    }
    if found != expected:
        raise PartFailedError(f"expected the {expected} backend, the run reported {found}", result)
    return result


# --- part 4: one timed SOKD epoch -------------------------------------------------------------


def generated_cifar(n_train: int, n_val: int) -> Prepared:
    """Random 32x32x3 uint8 images in 100 classes: an epoch's time does not depend on the pixels."""
    gen = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
        return Split(images, torch.randint(0, 100, (n,), generator=gen))

    classes = tuple(map(str, range(100)))
    splits = {"train": split(n_train), "val": split(n_val)}
    return Prepared("generated", classes, (0.5,) * 3, (0.25,) * 3, splits)


def timed_epochs(scale: Scale, params: Params, data: Prepared, compile: bool) -> dict[str, float]:
    """Two SOKD epochs through the one training loop; the second is the timed one.

    Everything but the budget comes from params.yaml (the project's SOKD settings, optimiser and
    batch size), with the CIFAR crop padding of 4 for 32x32 images.
    """
    from pipeline.data.batches import make_batches

    runtime = fast_runtime(params, torch.device(scale.device), compile=compile)
    torch.manual_seed(0)
    teacher, student = (create_model(arch, 100, 3) for arch in EPOCH_PAIR)
    objective = build_objective("sokd", student, teacher, params.distill.objective("sokd"))
    train = params.distill.train
    augment = dataclasses.replace(train.augment, pad=4)
    cfg = dataclasses.replace(train, epochs=2, augment=augment)
    train = make_batches(data, "train", cfg.batch_size, cfg.augment, runtime, 0)
    val = make_batches(data, "val", cfg.batch_size, None, runtime, 0)
    history = fit(objective, train, val, cfg, runtime, "sokd epoch").history
    return {
        "first_epoch_s": history[0]["time/epoch_s"],
        "epoch_s": history[1]["time/epoch_s"],
        "images_per_s": history[1]["time/images_per_s"],
        "peak_memory_mb": max(row["memory/peak_mb"] for row in history),
        "amp": str(runtime.amp_dtype).removeprefix("torch."),
    }


def part_epoch(scale: Scale, work: Path, clock: Clock) -> dict[str, Any]:
    data = generated_cifar(scale.epoch_images, scale.epoch_val_images)
    params = quickstart_params()
    result: dict[str, Any] = {
        "pair": "->".join(EPOCH_PAIR),
        "images": scale.epoch_images,
        "batch": params.distill.train.batch_size,
        "eager": timed_epochs(scale, params, data, compile=False),
    }
    # Compiling both networks costs about a minute: only where the speed rows keep enough time.
    if scale.compiled_epoch and clock.left() > 240:
        result["compiled"] = timed_epochs(scale, params, data, compile=True)
    else:
        result["compiled"] = "skipped: dry run or time budget"
    return result


# --- part 5: speed rows ---------------------------------------------------------------------------


def part_speed(scale: Scale, work: Path, clock: Clock) -> dict[str, Any]:
    device, params = torch.device(scale.device), quickstart_params()
    batch = params.distill.train.batch_size
    rows, notes = [], []
    for pair in scale.pairs:
        _, _, shape, classes = PAIRS[pair]
        data = synthetic_data(shape, classes, n=batch * (scale.steps + 4))
        for objective in TIMED:
            runtimes = {
                "plain": plain_runtime(device, scale.workers),
                "fast": fast_runtime(params, device),
            }
            if objective in scale.compile_objectives and clock.left() > 75:
                runtimes["compiled"] = fast_runtime(params, device, compile=True)
            elif objective in scale.compile_objectives:
                notes.append(f"{pair} {objective}: compile skipped, time budget")
            try:
                row = measure_pair_objective(
                    params, pair, objective, runtimes, data, scale.steps, scale.rounds
                )
            except SystemExit:  # torch.compile cannot run here: keep the eager columns
                notes.append(f"{pair} {objective}: torch.compile failed")
                runtimes.pop("compiled")
                row = measure_pair_objective(
                    params, pair, objective, runtimes, data, scale.steps, scale.rounds
                )
            rows.append(row)
            print(f"    {_speed_line(row)}", flush=True)
    return {"steps": scale.steps, "rounds": scale.rounds, "rows": rows, "notes": notes}


def _speed_line(row: dict[str, Any]) -> str:
    compiled = (
        f"  compiled {row['compiled_images_per_s']:7.0f} x{row['compiled_speedup']:.2f}"
        if "compiled_speedup" in row
        else ""
    )
    return (
        f"{row['pair']:16s} {row['objective']:8s} plain {row['plain_images_per_s']:7.0f}  "
        f"fast {row['fast_images_per_s']:7.0f} x{row['speedup']:.2f}{compiled} img/s"
    )


# --- running and reporting ------------------------------------------------------------------------


class PartFailedError(RuntimeError):
    """A part ran but did not pass; `figures` keeps what it measured."""

    def __init__(self, message: str, figures: dict[str, Any]) -> None:
        super().__init__(message)
        self.figures = figures


PARTS: dict[str, Callable[[Scale, Path, Clock], dict[str, Any]]] = {
    "tests": part_tests,
    "pipeline": part_pipeline,
    "torchrun": part_torchrun,
    "epoch": part_epoch,
    "speed": part_speed,
}


def run_part(name: str, index: int, scale: Scale, work: Path, clock: Clock) -> dict[str, Any]:
    print(f"[{index}/{len(PARTS)}] {name} ...", flush=True)
    start = time.perf_counter()
    try:
        result = {"status": "passed", **PARTS[name](scale, work, clock)}
    except PartFailedError as err:
        result = {"status": "failed", "error": str(err), **err.figures}
    except Exception as err:  # one part's failure must not hide the others' figures
        result = {"status": "failed", "error": f"{type(err).__name__}: {_first_line(str(err))}"}
    result["seconds"] = round(time.perf_counter() - start, 2)
    detail = f": {result['error']}" if "error" in result else ""
    print(f"[{index}/{len(PARTS)}] {name} {result['status']} in {result['seconds']:.0f} s{detail}")
    return result


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine(scale: Scale) -> dict[str, Any]:
    cuda = scale.device == "cuda"
    flags = ""
    if Path("/proc/cpuinfo").is_file():
        flags = next(
            (ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")),
            "",
        )
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")
    return {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu (dry run)",
        "capability": ".".join(map(str, torch.cuda.get_device_capability(0))) if cuda else None,
        "memory_gib": (
            round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None
        ),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "bf16_supported": torch.cuda.is_bf16_supported() if cuda else None,
        "cpu_count": os.cpu_count(),
        "cpu_flags": [f for f in wanted if f" {f} " in f"{flags} "],
        "python": platform.python_version(),
        **{pkg: _version(pkg) for pkg in ("torch", "torchvision", "onnx", "onnxruntime")},
    }


def print_table(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(f"\n{m['device']}, torch {m['torch']} (CUDA {m['cuda']}), {report['total_s']:.0f} s")
    print("\n| part | status | seconds | figures |\n|---|---|---|---|")
    for name, part in report["parts"].items():
        print(f"| {name} | {part['status']} | {part['seconds']:.0f} | {_summary(name, part)} |")
    speed = report["parts"]["speed"].get("rows", [])
    if speed:
        print("\n| pair | objective | plain img/s | fast img/s | x | compiled img/s | x |")
        print("|---|---|---|---|---|---|---|")
        for r in speed:
            compiled = r.get("compiled_images_per_s")
            tail = f"{compiled:.0f} | {r['compiled_speedup']:.2f}" if compiled else "- | -"
            print(
                f"| {r['pair']} | {r['objective']} | {r['plain_images_per_s']:.0f} | "
                f"{r['fast_images_per_s']:.0f} | {r['speedup']:.2f} | {tail} |"
            )


def _summary(name: str, part: dict[str, Any]) -> str:
    if part["status"] != "passed":
        return part.get("error", "")
    if name == "tests":
        return f"{part['passed']} passed, {part['skipped']} skipped"
    if name == "pipeline":
        return f"gate passed; ONNX top-1 {part['onnx_top1']:.3f}, INT8 {part['int8_top1']:.3f}"
    if name == "torchrun":
        return f"{part['backend']} backend, SOKD val top-1 {part['sokd_val_top1']:.3f}"
    if name == "epoch":
        e = part["eager"]
        text = f"{e['epoch_s']:.2f} s/epoch ({e['images_per_s']:.0f} img/s, {e['amp']})"
        text += f", peak {e['peak_memory_mb']:.0f} MB"
        if isinstance(part["compiled"], dict):
            text += f"; compiled {part['compiled']['epoch_s']:.2f} s"
        return text
    return f"{len(part['rows'])} rows"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="JSON report (default benchmarks/gpu.json)")
    parser.add_argument(
        "--cpu-dry-run", action="store_true", help="every part at toy size on the CPU"
    )
    parser.add_argument("--budget-s", type=float, default=420, help="time the check aims for")
    parser.add_argument("--write-plan", action="store_true", help=f"(with dvc) rewrite {PLAN.name}")
    args = parser.parse_args(argv)
    if args.write_plan:
        resolve_plan()
        return 0
    if not args.cpu_dry_run and not torch.cuda.is_available():
        print(
            "error: no CUDA device is visible (torch.cuda.is_available() is False); run "
            "`make gpu-check` on a GPU machine, or add --cpu-dry-run to test the script here",
            file=sys.stderr,
        )
        return 2
    scale = DRY if args.cpu_dry_run else GPU
    out = args.out or ROOT / (
        "benchmarks/gpu_dry_run.json" if args.cpu_dry_run else "benchmarks/gpu.json"
    )
    os.environ.setdefault("TQDM_DISABLE", "1")  # one progress line per part, not per batch
    clock = Clock(args.budget_s)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        parts = {
            name: run_part(name, i, scale, Path(tmp), clock) for i, name in enumerate(PARTS, 1)
        }
    report = {
        "mode": "cpu-dry-run" if args.cpu_dry_run else "cuda",
        "machine": machine(scale),
        "scale": dataclasses.asdict(scale),
        "budget_s": args.budget_s,
        "total_s": round(clock.elapsed(), 1),
        "passed": all(p["status"] == "passed" for p in parts.values()),
        "parts": parts,
    }
    write_json(out, report)
    print_table(report)
    print(f"\nwrote {out}: {'all parts passed' if report['passed'] else 'a part FAILED'}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
