"""The one training loop: teacher pretraining, baselines and every distiller go through `fit`."""

from __future__ import annotations

import itertools
import logging
import math
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from pipeline.core.config import OptimConfig, ScheduleConfig, TrainConfig
from pipeline.core.distributed import distributed, sum_across, world
from pipeline.core.errors import PipelineError
from pipeline.core.runtime import Runtime, prepare_module
from pipeline.data.batches import BatchSource
from pipeline.objectives.base import Objective, StepOutput
from pipeline.training.inference import predict, topk_accuracy
from pipeline.training.resume import ResumeFile, load_state, restore, save_state

log = logging.getLogger(__name__)


def lr_factor(
    schedule: ScheduleConfig, epochs: int, steps_per_epoch: int
) -> Callable[[int], float]:
    """Multiplier of each group's base lr after `step` steps (warm-up, then cosine or steps)."""
    total, warm = epochs * steps_per_epoch, round(schedule.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warm:
            return 0.1 + 0.9 * step / warm
        if schedule.kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))
        epoch = step // steps_per_epoch
        return schedule.gamma ** sum(epoch >= m for m in schedule.milestones)

    return factor


@dataclass(frozen=True)
class FitHooks:
    """Optional additions to `fit`: extra history columns, a row listener, a resume file."""

    on_epoch: Callable[[nn.Module], dict[str, float]] | None = None  # extra columns
    on_row: Callable[[dict[str, float]], None] | None = None  # each finished epoch's row
    resume: ResumeFile | None = None


@dataclass(frozen=True)
class FitResult:
    history: list[dict[str, float]]  # one row per epoch
    best_epoch: int  # 1-based epoch of the highest validation top-1
    best_val_top1: float
    last_val_top1: float


def build_optimizer(objective: Objective, cfg: OptimConfig) -> torch.optim.SGD:
    """SGD over the objective's parameter groups (whatever still requires a gradient)."""
    return torch.optim.SGD(
        objective.param_groups(cfg.lr),
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        nesterov=cfg.nesterov,
    )


class _StepAsForward(nn.Module):
    """DDP synchronises gradients of what its wrapped module's forward computes: the step."""

    def __init__(self, objective: Objective) -> None:
        super().__init__()
        self.objective = objective

    def forward(self, images: Tensor, labels: Tensor, progress: float) -> StepOutput:
        return self.objective.step(images, labels, progress)


def step_function(objective: Objective, runtime: Runtime) -> Callable[..., StepOutput]:
    """`objective.step`, wrapped in DistributedDataParallel when running under torchrun."""
    if not distributed():
        return objective.step
    devices = [runtime.device.index] if runtime.device.type == "cuda" else None
    return DistributedDataParallel(_StepAsForward(objective), device_ids=devices)


def train_step(
    step: Callable[..., StepOutput],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    images: Tensor,
    labels: Tensor,
    runtime: Runtime,
    progress: float,
) -> StepOutput:
    """One optimisation step: forward under autocast, backward, update. No host synchronisation."""
    with runtime.autocast():
        out = step(images, labels, progress)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(out.loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return out


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process so far: allocated on the GPU, resident on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


DIVERGENCE_CHECK_STEPS = 25  # read the loss's finiteness back once per this many steps


def _check_finite(finite: Tensor, name: str, step: int, epoch: int) -> None:
    """Fail if any process's loss was non-finite so far (one host sync; a collective under DDP)."""
    if sum_across(finite.float()).item() < world().size:
        raise PipelineError(
            f"{name}: training loss became NaN or infinite by step {step} of epoch {epoch}; "
            f"lower train.optim.lr in this stage's params section, or check the data"
        )


def epoch_steps(train: BatchSource, cfg: TrainConfig) -> int:
    """Batches per epoch: `cfg.epoch_fraction` of a pass over `train`, at least one."""
    return max(1, round(len(train) * cfg.epoch_fraction))


def images_per_epoch(train: BatchSource, steps: int, batch_size: int) -> int:
    """Training images an epoch of `steps` batches of the global `batch_size` sees."""
    return train.num_images if steps == len(train) else steps * batch_size


def _train_epoch(
    t: Training, train: BatchSource, runtime: Runtime, epoch: int, epochs: int, name: str
) -> dict[str, float]:
    """One epoch (`t.steps` batches of `train`); returns its mean loss parts and training top-1.

    A diverging run stops within DIVERGENCE_CHECK_STEPS steps: finiteness accumulates on the
    device and is read back only every so often, so the GPU is never stalled step by step.
    """
    t.objective.train()
    steps = t.steps
    # Sums stay on the device: reading them every step would stall the pipeline on a GPU.
    sums: dict[str, Tensor] = {}
    correct = torch.zeros((), device=runtime.device)
    finite = torch.ones((), dtype=torch.bool, device=runtime.device)
    quiet = None if world().is_main else True  # one progress bar, from the main process
    desc = f"{name} {epoch + 1}/{epochs}"
    batches = itertools.islice(train, steps)  # an epoch may stop before the pass ends
    bar = tqdm(batches, desc=desc, unit="batch", total=steps, leave=False, disable=quiet)
    for i, (images, labels) in enumerate(bar):
        progress = (epoch + i / steps) / epochs
        out = train_step(t.step, t.optimizer, t.scaler, images, labels, runtime, progress)
        t.scheduler.step()
        with torch.no_grad():
            for key, value in {"loss": out.loss, **out.parts}.items():
                sums[key] = sums.get(key, 0) + value.detach().float()
            correct += (out.logits.argmax(1) == labels).sum()
            finite &= torch.isfinite(out.loss.detach())
        if (i + 1) % DIVERGENCE_CHECK_STEPS == 0:
            _check_finite(finite, name, i + 1, epoch + 1)
        if not bar.disable and i % 50 == 49:  # a rare sync, and only when someone watches
            bar.set_postfix(loss=f"{sums['loss'].item() / (i + 1):.3f}")
    _check_finite(finite, name, steps, epoch + 1)
    # Every process saw its share of each batch: average the per-process means, add the counts.
    totals = sum_across(torch.stack([*sums.values(), correct.float()]))
    row = {
        f"train/{k}": v.item() / (steps * world().size) for k, v in zip(sums, totals, strict=False)
    }
    row["train/top1"] = totals[-1].item() / t.images
    return row


@dataclass
class Training:
    """Everything one `fit` steps: the objective and its optimiser, schedule and loss scaler."""

    objective: Objective
    step: Callable[..., StepOutput]  # the objective's step, DDP-wrapped under torchrun
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    steps: int  # batches per epoch
    images: int  # training images per epoch

    def stateful(self) -> dict[str, Any]:
        """What a resume file saves and restores."""
        return {
            "objective": self.objective,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "scaler": self.scaler,
        }


def set_up(
    objective: Objective, train: BatchSource, cfg: TrainConfig, runtime: Runtime
) -> Training:
    """The objective on its device, with its optimiser, lr schedule and loss scaler."""
    prepare_module(objective, runtime)
    objective.epochs = cfg.epochs
    if runtime.compile:
        objective.compile_networks()
    optimizer = build_optimizer(objective, cfg.optim)
    steps = epoch_steps(train, cfg)
    schedule = lr_factor(cfg.schedule, cfg.epochs, steps)
    return Training(
        objective=objective,
        step=step_function(objective, runtime),
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, schedule),
        scaler=runtime.grad_scaler(),
        steps=steps,
        images=images_per_epoch(train, steps, cfg.batch_size),
    )


def _validate(network: nn.Module, val: BatchSource, runtime: Runtime) -> dict[str, float]:
    """Validation top-1 and cross-entropy of the deployable network."""
    logits = predict(network, val, runtime)
    return {
        "val/top1": topk_accuracy(logits, val.labels, 1),
        "val/loss": torch.nn.functional.cross_entropy(logits, val.labels.cpu()).item(),
    }


def _log_epoch(name: str, epochs: int, row: dict[str, float]) -> None:
    log.info(
        "%s epoch %d/%d  loss %.4f  train top-1 %.2f%%  val top-1 %.2f%%  lr %.4f  "
        "%.0f s  %.0f img/s",
        name,
        row["epoch"],
        epochs,
        row["train/loss"],
        100 * row["train/top1"],
        100 * row["val/top1"],
        row["lr"],
        row["time/epoch_s"],
        row["time/images_per_s"],
    )


def fit(
    objective: Objective,
    train: BatchSource,
    val: BatchSource,
    cfg: TrainConfig,
    runtime: Runtime,
    name: str,
    hooks: FitHooks = FitHooks(),
) -> FitResult:
    """Train `objective` for `cfg.epochs` epochs, validating its deployable network after each.

    `hooks.on_epoch` adds columns to an epoch's history row from the deployable network (the
    benchmarks record test accuracy with it); `hooks.on_row` receives each finished row (live
    experiment logging); with `hooks.resume`, the full training state is written after every epoch
    and a run that finds its own state there continues from it.
    """
    if cfg.epochs < 1:  # run_teacher and run_distill say which params key; this is the floor
        raise PipelineError(f"{name}: train.epochs is {cfg.epochs}; fit trains at least 1")
    t = set_up(objective, train, cfg, runtime)
    first_epoch, history = 0, []
    state = load_state(hooks.resume) if hooks.resume is not None else None
    if state is not None:
        first_epoch, history = restore(state, t.stateful())
        train.set_rng_state(state["batches_rng"])
        log.info("%s: resuming after epoch %d from %s", name, first_epoch, hooks.resume.path)
        if hooks.on_row is not None and world().is_main:  # the live record starts complete
            for row in history:
                hooks.on_row(row)
    if runtime.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(runtime.device)
    log.info(
        "%s: %d epochs x %d steps of %d images on %s",
        name,
        cfg.epochs,
        t.steps,
        cfg.batch_size,
        runtime.describe(),
    )
    for epoch in range(first_epoch, cfg.epochs):
        start = time.perf_counter()
        row: dict[str, float] = {"epoch": epoch + 1, "lr": t.optimizer.param_groups[0]["lr"]}
        row.update(_train_epoch(t, train, runtime, epoch, cfg.epochs, name))
        if runtime.device.type == "cuda":
            torch.cuda.synchronize(runtime.device)  # the epoch's work is queued, not yet done
        seconds = time.perf_counter() - start
        row.update(_validate(objective.deployable(), val, runtime))
        row["time/epoch_s"] = seconds
        row["time/images_per_s"] = t.images / seconds
        row["memory/peak_mb"] = peak_memory_mb(runtime.device)
        if hooks.on_epoch is not None:
            row.update(hooks.on_epoch(objective.deployable()))
        history.append(row)
        if hooks.resume is not None and world().is_main:
            save_state(hooks.resume, epoch + 1, history, t.stateful(), train.rng_state())
        if hooks.on_row is not None and world().is_main:
            hooks.on_row(row)
        _log_epoch(name, cfg.epochs, row)
    best = max(history, key=lambda r: r["val/top1"])
    return FitResult(history, int(best["epoch"]), best["val/top1"], history[-1]["val/top1"])
