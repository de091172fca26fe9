"""The one training loop: teacher pretraining, baselines and every distiller go through `fit`."""

from __future__ import annotations

import logging
import math
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from pipeline.batches import BatchSource
from pipeline.config import OptimConfig, ScheduleConfig, TrainConfig
from pipeline.distributed import distributed, sum_across, world
from pipeline.errors import PipelineError
from pipeline.objectives.base import Objective, StepOutput
from pipeline.resume import ResumeFile, load_state, restore, save_state
from pipeline.runtime import Runtime

log = logging.getLogger(__name__)


def lr_factor(
    schedule: ScheduleConfig, epochs: int, steps_per_epoch: int
) -> Callable[[int], float]:
    """Multiplier of each group's base lr after `step` steps (warm-up, then cosine or steps)."""
    total, warm = epochs * steps_per_epoch, schedule.warmup_epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warm:
            return 0.1 + 0.9 * step / warm
        if schedule.kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))
        epoch = step // steps_per_epoch
        return schedule.gamma ** sum(epoch >= m for m in schedule.milestones)

    return factor


def prepare_module(module: nn.Module, runtime: Runtime) -> nn.Module:
    """Move `module` to the runtime's device and memory layout."""
    module.to(runtime.device)
    return module.to(memory_format=torch.channels_last) if runtime.channels_last else module


@torch.no_grad()
def predict(model: nn.Module, batches: BatchSource, runtime: Runtime) -> Tensor:
    """Logits (N, K) of `model` in eval mode over every image of `batches`, as fp32 on the CPU."""
    was_training = model.training
    model.eval()
    outs = []
    try:
        with runtime.autocast():
            outs = [model(images).float() for images, _ in batches]
    finally:
        model.train(was_training)
    return torch.cat(outs).cpu()


def topk_accuracy(logits: Tensor, labels: Tensor, k: int) -> float:
    """Fraction of rows whose label is among the k highest logits."""
    k = min(k, logits.shape[1])
    hits = (logits.topk(k, dim=1).indices == labels[:, None].to(logits.device)).any(1)
    return hits.sum().item() / len(hits)


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


def _train_epoch(
    objective: Objective,
    step: Callable[..., StepOutput],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    train: BatchSource,
    runtime: Runtime,
    epoch: int,
    epochs: int,
    name: str,
) -> dict[str, float]:
    """One pass over `train`; returns the epoch's mean loss parts and training top-1."""
    objective.train()
    steps = len(train)
    # Sums stay on the device: reading them every step would stall the pipeline on a GPU.
    sums: dict[str, Tensor] = {}
    correct = torch.zeros((), device=runtime.device)
    quiet = None if world().is_main else True  # one progress bar, from the main process
    bar = tqdm(train, desc=f"{name} {epoch + 1}/{epochs}", unit="batch", leave=False, disable=quiet)
    for i, (images, labels) in enumerate(bar):
        progress = (epoch + i / steps) / epochs
        out = train_step(step, optimizer, scaler, images, labels, runtime, progress)
        scheduler.step()
        with torch.no_grad():
            for key, value in {"loss": out.loss, **out.parts}.items():
                sums[key] = sums.get(key, 0) + value.detach().float()
            correct += (out.logits.argmax(1) == labels).sum()
        if not bar.disable and i % 50 == 49:  # a rare sync, and only when someone watches
            bar.set_postfix(loss=f"{sums['loss'].item() / (i + 1):.3f}")
    # Every process saw its share of each batch: average the per-process means, add the counts.
    totals = sum_across(torch.stack([*sums.values(), correct.float()]))
    row = {
        f"train/{k}": v.item() / (steps * world().size) for k, v in zip(sums, totals, strict=False)
    }
    if not math.isfinite(row["train/loss"]):
        raise PipelineError(
            f"{name}: training loss became {row['train/loss']} in epoch "
            f"{epoch + 1}; lower the learning rate or check the data"
        )
    row["train/top1"] = totals[-1].item() / train.num_images
    return row


def fit(
    objective: Objective,
    train: BatchSource,
    val: BatchSource,
    cfg: TrainConfig,
    runtime: Runtime,
    name: str,
    on_epoch: Callable[[nn.Module], dict[str, float]] | None = None,
    resume: ResumeFile | None = None,
) -> FitResult:
    """Train `objective` for `cfg.epochs` epochs, validating its deployable network after each.

    `on_epoch`, if given, receives the deployable network after each epoch and returns extra
    columns for that epoch's history row (the benchmarks record test accuracy per epoch with it).
    With `resume`, the full training state is written after every epoch and a run that finds its
    own state there continues from it.
    """
    prepare_module(objective, runtime)
    if runtime.compile:
        objective.compile_networks()
    optimizer = build_optimizer(objective, cfg.optim)
    scaler = runtime.grad_scaler()
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(cfg.schedule, cfg.epochs, len(train))
    )
    step = step_function(objective, runtime)
    stateful = {
        "objective": objective,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "scaler": scaler,
    }
    first_epoch, history = 0, []
    state = load_state(resume) if resume is not None else None
    if state is not None:
        first_epoch, history = restore(state, stateful)
        train.set_rng_state(state["batches_rng"])
        log.info("%s: resuming after epoch %d from %s", name, first_epoch, resume.path)
    if runtime.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(runtime.device)
    log.info(
        "%s: %d epochs x %d steps of %d images on %s",
        name,
        cfg.epochs,
        len(train),
        cfg.batch_size,
        runtime.describe(),
    )
    for epoch in range(first_epoch, cfg.epochs):
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        row: dict[str, float] = {"epoch": epoch + 1, "lr": lr}
        row.update(
            _train_epoch(
                objective,
                step,
                optimizer,
                scheduler,
                scaler,
                train,
                runtime,
                epoch,
                cfg.epochs,
                name,
            )
        )
        if runtime.device.type == "cuda":
            torch.cuda.synchronize(runtime.device)  # the epoch's work is queued, not yet done
        seconds = time.perf_counter() - start
        logits = predict(objective.deployable(), val, runtime)
        row["val/top1"] = topk_accuracy(logits, val.labels, 1)
        row["val/loss"] = torch.nn.functional.cross_entropy(logits, val.labels.cpu()).item()
        row["time/epoch_s"] = seconds
        row["time/images_per_s"] = train.num_images / seconds
        row["memory/peak_mb"] = peak_memory_mb(runtime.device)
        if on_epoch is not None:
            row.update(on_epoch(objective.deployable()))
        history.append(row)
        if resume is not None and world().is_main:
            save_state(resume, epoch + 1, history, stateful, train.rng_state())
        log.info(
            "%s epoch %d/%d  loss %.4f  train top-1 %.2f%%  val top-1 %.2f%%  lr %.4f  "
            "%.0f s  %.0f img/s",
            name,
            epoch + 1,
            cfg.epochs,
            row["train/loss"],
            100 * row["train/top1"],
            100 * row["val/top1"],
            lr,
            seconds,
            row["time/images_per_s"],
        )
    best = max(history, key=lambda r: r["val/top1"])
    return FitResult(history, int(best["epoch"]), best["val/top1"], history[-1]["val/top1"])
