"""Speed of a training step: a plain path against the project's fast path, side by side in one run.

    python -m benchmarks.speed [--out benchmarks/speed.json] [--steps N] [--rounds R] [--pairs ...]
                               [--compile] [--params params.yaml]

Every hyperparameter (batch size, optimiser, augmentation, each objective's settings) and the fast
path's runtime come from the params file through the pipeline's own loader and factories; the
plain path is the same runtime section with the reference behaviour switched on.

Plain path (what reference implementations do): a DataLoader with per-sample PIL transforms in
worker processes, eager fp32 in the default memory layout, the frozen teacher in train mode
(BatchNorm on batch statistics), and a `loss.item()` every step. Fast path (this project's
defaults): the split in memory on the device with batch-wise augmentation, channels_last, bf16
autocast where the hardware runs it natively, the teacher in eval mode under inference_mode and
run once per step, no host sync. With `--compile`, a third path adds torch.compile to the fast
one (the option `runtime.compile`), its compilation time reported apart.

Each (pair, objective) is measured in alternating rounds, plain then fast, so slow drift of a
shared machine hits both paths alike. It also times the SOKD step against the sum of its parts
(student step + teacher forward + bridge step), each measured alone.

To show how close a path is to the hardware, every row also gives the matrix arithmetic of one
step (convolution and linear FLOPs, forward and backward, counted by torch's FlopCounterMode) and
the rate the fast path sustains, next to a large fp32 matrix product timed in the same rounds: the
most this machine's fp32 kernels deliver.

Speed-ups are medians of the per-round ratios (plain and fast timed back to back); every round's
ratio is kept in the JSON, so the spread a noisy machine gives is visible.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.core.config import Params, RuntimeConfig
from pipeline.core.files import write_json
from pipeline.core.params import load_params
from pipeline.core.runtime import Runtime, machine, prepare_module, resolve_runtime
from pipeline.data.batches import make_batches
from pipeline.data.datasets import Prepared, Split
from pipeline.models import create_model
from pipeline.models.staged import copy_head, split
from pipeline.objectives import build_objective
from pipeline.objectives.base import StepOutput
from pipeline.objectives.losses import cross_entropy
from pipeline.training.engine import set_up, train_step

PAIRS = {  # name: (teacher, student, (C, H, W), classes)
    "quickstart": ("resnet20", "resnet8", (1, 28, 28), 10),
    "wrn40_2-wrn16_2": ("wrn_40_2", "wrn_16_2", (3, 32, 32), 100),
}
TIMED = ("vanilla", "kd", "sokd")  # the baseline, the classic distiller, this project's method
ROOT = Path(__file__).resolve().parents[1]


def quickstart_params() -> Params:
    """The project's params.yaml: what `dvc repro` trains with."""
    return load_params(ROOT / "params.yaml")


def synthetic_data(shape: tuple[int, int, int], classes: int, n: int) -> Prepared:
    """Random uint8 images of the pair's shape: speed does not depend on the pixels."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, classes, (n,), generator=gen)
    c = shape[0]
    return Prepared(
        "synthetic",
        tuple(map(str, range(classes))),
        (0.5,) * c,
        (0.25,) * c,
        {"train": Split(images, labels)},
    )


def fast_runtime(params: Params, device: torch.device, compile: bool = False) -> Runtime:
    """The params file's runtime section on `device` (the project's defaults: the fast path)."""
    cfg = dataclasses.replace(params.runtime, device=str(device), compile=compile)
    return resolve_runtime(cfg)


def plain_runtime(device: torch.device, workers: int) -> Runtime:
    """What reference implementations do: fp32, default layout, per-sample transforms in workers."""
    cfg = RuntimeConfig(str(device), "none", False, False, loader="stream", workers=workers)
    return resolve_runtime(cfg)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stepper:
    """A ready-to-run objective on one path; `run(n)` returns seconds per step for n steps."""

    def __init__(
        self,
        params: Params,
        pair: str,
        objective: str,
        runtime: Runtime,
        plain: bool,
        data: Prepared,
    ) -> None:
        teacher_arch, student_arch, shape, classes = PAIRS[pair]
        torch.manual_seed(0)
        teacher = create_model(teacher_arch, classes, shape[0]) if objective != "vanilla" else None
        student = create_model(student_arch, classes, shape[0])
        settings = params.distill.objective(objective)
        self.objective = build_objective(objective, student, teacher, settings)
        if plain:
            self.objective.frozen = ()  # the reference behaviour: the frozen teacher in train mode
        train = params.distill.train
        self.batches = make_batches(data, "train", train.batch_size, train.augment, runtime, 0)
        # The training loop's own set-up: device, memory layout, compile, optimiser, scaler.
        self.training = set_up(self.objective, self.batches, train, runtime)
        self.runtime, self.plain = runtime, plain
        self._iter = iter(self.batches)

    def _next(self) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            return next(self._iter)
        except StopIteration:
            self._iter = iter(self.batches)
            return next(self._iter)

    def step_flops(self) -> int:
        """Matrix FLOPs (convolutions, linear layers; forward and backward) of one step."""
        images, labels = self._next()
        with FlopCounterMode(display=False) as counter:
            self._step(images, labels)
        return counter.get_total_flops()

    def _step(self, images: torch.Tensor, labels: torch.Tensor) -> StepOutput:
        t = self.training
        return train_step(t.step, t.optimizer, t.scaler, images, labels, self.runtime, 0.0)

    def run(self, steps: int) -> float:
        self.objective.train()
        _sync(self.runtime.device)
        start = time.perf_counter()
        for _ in range(steps):
            images, labels = self._next()
            out = self._step(images, labels)
            if self.plain:
                out.loss.item()  # reference loops log the loss every step, a host sync each time
        _sync(self.runtime.device)
        return (time.perf_counter() - start) / steps


def _timed(fn: Callable[[], object], steps: int, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / steps


def matmul_gflops(device: torch.device, n: int = 2048, reps: int = 3) -> float:
    """fp32 rate of a large square matrix product: what this machine's kernels deliver at best."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b  # warm-up
    seconds = _timed(lambda: a @ b, reps, device)
    return 2 * n**3 / seconds / 1e9


def sokd_parts(
    params: Params, pair: str, runtime: Runtime, data: Prepared, steps: int, rounds: int
) -> dict[str, float]:
    """Seconds per step of SOKD and of its parts alone (medians over rounds) on the fast path,
    and `sokd_over_sum`, the median over rounds of the step's time over the sum of its parts'."""
    teacher_arch, _, shape, classes = PAIRS[pair]
    sokd = Stepper(params, pair, "sokd", runtime, plain=False, data=data)
    student = Stepper(params, pair, "vanilla", runtime, plain=False, data=data)
    teacher = prepare_module(create_model(teacher_arch, classes, shape[0]), runtime).eval()
    trunk, head = split(teacher, "")
    bridge = prepare_module(copy_head(head, reinitialise=False), runtime).train()
    optim = params.distill.train.optim
    bridge_opt = torch.optim.SGD(bridge.parameters(), lr=optim.lr, momentum=optim.momentum)
    images, labels = next(iter(sokd.batches))
    with torch.inference_mode(), runtime.autocast():
        features = trunk(images).clone()

    def teacher_forward() -> None:
        with torch.inference_mode(), runtime.autocast():
            teacher(images)

    def bridge_step() -> None:
        with runtime.autocast():
            loss = cross_entropy(bridge(features.clone()), labels)
        bridge_opt.zero_grad(set_to_none=True)
        loss.backward()
        bridge_opt.step()

    for warm in (sokd.run, student.run):
        warm(2)
    _timed(teacher_forward, 2, runtime.device)
    _timed(bridge_step, 2, runtime.device)
    samples: dict[str, list[float]] = {"sokd": [], "student": [], "teacher": [], "bridge": []}
    for _ in range(rounds):
        samples["sokd"].append(sokd.run(steps))
        samples["student"].append(student.run(steps))
        samples["teacher"].append(_timed(teacher_forward, steps, runtime.device))
        samples["bridge"].append(_timed(bridge_step, steps, runtime.device))
    medians = {k: statistics.median(v) for k, v in samples.items()}
    # The step and its parts ran back to back in each round: the ratio there is what drift spares.
    parts = zip(samples["student"], samples["teacher"], samples["bridge"], strict=True)
    rounds_ratio = [s / sum(p) for s, p in zip(samples["sokd"], parts, strict=True)]
    return {**medians, "sokd_over_sum": statistics.median(rounds_ratio)}


def measure_pair_objective(
    params: Params,
    pair: str,
    objective: str,
    runtimes: dict[str, Runtime],
    data: Prepared,
    steps: int,
    rounds: int,
) -> dict[str, object]:
    """One table row: every path's images/s, side by side in alternating rounds, and arithmetic."""
    steppers = {}
    row: dict[str, object] = {"pair": pair, "objective": objective}
    for name, runtime in runtimes.items():
        steppers[name] = Stepper(params, pair, objective, runtime, name == "plain", data)
        start = time.perf_counter()
        try:
            steppers[name].run(2)  # warm-up: allocator, worker start-up, lazy init, compilation
        except Exception as err:  # compilation needs a C++ toolchain, which not every host has
            if not runtime.compile:
                raise
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
            print(
                f"error: torch.compile failed here ({reason}); run without --compile",
                file=sys.stderr,
            )
            raise SystemExit(2) from None
        if runtime.compile:
            row["compile_s"] = time.perf_counter() - start
    flops = steppers["fast"].step_flops()
    batch = params.distill.train.batch_size
    times: dict[str, list[float]] = {name: [] for name in steppers}
    peak: list[float] = []
    for _ in range(rounds):
        for name, s in steppers.items():
            times[name].append(s.run(steps))
        peak.append(matmul_gflops(runtimes["fast"].device))
    for name in steppers:
        row[f"{name}_images_per_s"] = batch / statistics.median(times[name])
    # Each round's paths ran back to back: their ratio within a round is what drift spares.
    for name, key in (("fast", "speedup"), ("compiled", "compiled_speedup")):
        if name in steppers:
            ratios = [p / f for p, f in zip(times["plain"], times[name], strict=True)]
            row[key] = statistics.median(ratios)
            row[f"{key}_rounds"] = ratios
    row["gflop_per_image"] = flops / batch / 1e9
    row["fast_gflops"] = row["fast_images_per_s"] * row["gflop_per_image"]
    row["matmul_gflops"] = statistics.median(peak)
    row["fast_fraction_of_matmul"] = row["fast_gflops"] / row["matmul_gflops"]
    return row


def _print_row(row: dict) -> None:
    compiled = (
        f"   compiled {row['compiled_images_per_s']:6.0f} img/s x{row['compiled_speedup']:.2f}"
        if "compiled_speedup" in row
        else ""
    )
    print(
        f"{row['pair']:16s} {row['objective']:8s} plain {row['plain_images_per_s']:6.0f} img/s   "
        f"fast {row['fast_images_per_s']:6.0f} img/s x{row['speedup']:.2f}{compiled}   "
        f"{row['fast_gflops']:.0f} GFLOP/s = {100 * row['fast_fraction_of_matmul']:.0f}% of "
        f"matmul",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/speed.json"))
    parser.add_argument("--steps", type=int, default=8, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating plain/fast rounds")
    parser.add_argument(
        "--workers", type=int, default=2, help="DataLoader workers of the plain path"
    )
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--compile", action="store_true", help="also time the fast path with torch.compile"
    )
    parser.add_argument(
        "--params", type=Path, default=ROOT / "params.yaml", help="hyperparameters and runtime"
    )
    args = parser.parse_args()
    params = load_params(args.params)
    device = torch.device(args.device)
    runtimes = {
        "plain": plain_runtime(device, args.workers),
        "fast": fast_runtime(params, device),
    }
    if args.compile:
        runtimes["compiled"] = fast_runtime(params, device, compile=True)
    rows, parts = [], {}
    for pair in args.pairs:
        _, _, shape, classes = PAIRS[pair]
        data = synthetic_data(shape, classes, n=params.distill.train.batch_size * (args.steps + 4))
        for objective in TIMED:
            row = measure_pair_objective(
                params, pair, objective, runtimes, data, args.steps, args.rounds
            )
            rows.append(row)
            _print_row(row)
        p = sokd_parts(params, pair, runtimes["fast"], data, args.steps, args.rounds)
        parts[pair] = {
            **{f"{k}_ms": 1000 * p[k] for k in ("sokd", "student", "teacher", "bridge")},
            "sum_of_parts_ms": 1000 * (p["student"] + p["teacher"] + p["bridge"]),
            "sokd_over_sum": p["sokd_over_sum"],  # median of the per-round ratios
        }
        print(
            f"{pair:16s} sokd step {1000 * p['sokd']:.0f} ms = "
            f"{parts[pair]['sokd_over_sum']:.2f} x (student {1000 * p['student']:.0f} + teacher "
            f"{1000 * p['teacher']:.0f} + bridge {1000 * p['bridge']:.0f} ms)",
            flush=True,
        )
    report = {
        "machine": machine(),
        "params": str(args.params),
        "batch_size": params.distill.train.batch_size,
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        **{
            name: {**dataclasses.asdict(rt), "device": str(device), "amp_dtype": str(rt.amp_dtype)}
            for name, rt in runtimes.items()
        },
        "rows": rows,
        "sokd_parts": parts,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    compiled = "compiled" in runtimes
    print(
        "\n| pair | objective | plain img/s | fast img/s | speed-up |"
        + (" compiled img/s | speed-up |" if compiled else "")
        + " GFLOP/image | fast GFLOP/s | of matmul |"
    )
    print("|---" * (8 + 2 * compiled) + "|")
    for r in rows:
        extra = (
            f" {r['compiled_images_per_s']:.0f} | {r['compiled_speedup']:.2f}x |"
            if compiled
            else ""
        )
        print(
            f"| {r['pair']} | {r['objective']} | {r['plain_images_per_s']:.0f} | "
            f"{r['fast_images_per_s']:.0f} | {r['speedup']:.2f}x |{extra} "
            f"{r['gflop_per_image']:.3f} | {r['fast_gflops']:.0f} | "
            f"{100 * r['fast_fraction_of_matmul']:.0f}% |"
        )
    print(
        "\n| pair | SOKD step ms | student + teacher fwd + bridge ms | ratio |\n|---|---|---|---|"
    )
    for pair, p in parts.items():
        print(
            f"| {pair} | {p['sokd_ms']:.0f} | {p['student_ms']:.0f} + {p['teacher_ms']:.0f} + "
            f"{p['bridge_ms']:.0f} = {p['sum_of_parts_ms']:.0f} | {p['sokd_over_sum']:.2f} |"
        )
    print(
        f"\nwrote {args.out} ({report['machine']['cpu']}, {report['machine']['threads']} threads)"
    )


if __name__ == "__main__":
    main()
