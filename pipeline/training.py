"""Teacher pretraining and distillation runs: data + networks + objective -> `fit` -> outputs."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from pipeline.batches import make_batches
from pipeline.checkpoint import load_checkpoint, save_checkpoint
from pipeline.config import DistillConfig, TeacherConfig, TrainConfig, as_dict
from pipeline.data import Prepared, load_prepared
from pipeline.distributed import world
from pipeline.engine import FitHooks, FitResult, fit
from pipeline.errors import CheckpointError, ConfigError
from pipeline.files import load_tensors, sha256_file, write_json
from pipeline.inference import predict, topk_accuracy
from pipeline.models import create_model
from pipeline.models.staged import count_parameters
from pipeline.models.torchvision_zoo import torchvision_key_map
from pipeline.objectives import OBJECTIVES, build_objective
from pipeline.objectives.base import Objective
from pipeline.reporting import plot_history
from pipeline.resume import ResumeFile
from pipeline.runtime import Runtime, prepare_module

log = logging.getLogger(__name__)


@dataclass
class TrainedRun:
    """What a training stage produced, ready to be written by `save_run`."""

    name: str
    data: Prepared
    fit: FitResult
    networks: dict[str, tuple[str, nn.Module]]  # role -> (arch, network); "student"/"teacher" first
    params: dict
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Extras:
    """Optional additions to a training run."""

    on_epoch: Callable[[nn.Module], dict[str, float]] | None = None  # extra history columns
    on_row: Callable[[dict[str, float]], None] | None = None  # each finished epoch (live logs)
    state: Path | None = None  # resumable training state, rewritten after every epoch


def _resume_file(extras: Extras, *identity: object) -> ResumeFile | None:
    if extras.state is None:
        return None
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
    return ResumeFile(extras.state, digest.hexdigest())


def check_batch_size(data: Prepared, train: TrainConfig, section: str) -> None:
    """A batch larger than the training split would be one giant batch: refuse it in one line."""
    images = len(data.splits["train"].labels)
    if train.batch_size > images:
        raise ConfigError(
            f"params.{section}.train.batch_size: {train.batch_size} is larger than the "
            f"{images:,} training images; use at most {images}"
        )


def _fit(
    name: str,
    objective: Objective,
    data: Prepared,
    train: TrainConfig,
    runtime: Runtime,
    seed: int,
    extras: Extras,
    resume: ResumeFile | None,
) -> tuple[FitResult, dict[str, float]]:
    train_batches = make_batches(data, "train", train.batch_size, train.augment, runtime, seed)
    val_batches = make_batches(data, "val", train.batch_size, None, runtime, seed)
    hooks = FitHooks(on_epoch=extras.on_epoch, on_row=extras.on_row, resume=resume)
    result = fit(objective, train_batches, val_batches, train, runtime, name, hooks)
    extra_top1 = {
        f"{role}/val_top1": topk_accuracy(predict(net, val_batches, runtime), val_batches.labels, 1)
        for role, (net, _) in objective.extra_networks().items()
    }
    return result, extra_top1


def _summary(result: FitResult, trainable: int) -> dict[str, float]:
    h = result.history
    return {
        "val/top1_best": result.best_val_top1,
        "val/best_epoch": result.best_epoch,
        "val/top1_last": result.last_val_top1,
        "train/top1_last": h[-1]["train/top1"],
        "time/train_s": sum(r["time/epoch_s"] for r in h),
        "time/epoch_s": sum(r["time/epoch_s"] for r in h) / len(h),
        "time/images_per_s": sum(r["time/images_per_s"] for r in h) / len(h),
        "memory/peak_mb": max(r["memory/peak_mb"] for r in h),
        "params/trainable": trainable,
    }


def import_weights(model: nn.Module, arch: str, path: Path) -> str:
    """Load a teacher's weights from a local file (weights_only) into `model`; return its SHA-256.

    Accepts this pipeline's checkpoints, plain state_dicts with this zoo's names, and torchvision
    state_dicts for the `tv_*` architectures (`torch.save(model.state_dict(), path)`).
    """
    raw = load_tensors(
        path,
        CheckpointError,
        "teacher weights",
        "save them with torch.save(model.state_dict(), path)",
    )
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else raw
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path} holds no state_dict; save it with torch.save(model.state_dict())"
        )
    own = model.state_dict()
    if set(state) != set(own) and arch.startswith("tv_"):
        classes = [m for m in model.modules() if isinstance(m, nn.Linear)][-1].out_features
        key_map = torchvision_key_map(arch, classes)
        state = {key_map.get(k, k): v for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        detail = (str(err).strip().splitlines()[1:2] or [str(err)])[0].strip()
        raise CheckpointError(f"weights in {path} do not fit {arch!r}: {detail}") from None
    return sha256_file(path)


def run_teacher(
    data_path: Path,
    cfg: TeacherConfig,
    runtime: Runtime,
    seed: int,
    extras: Extras = Extras(),
    weights: Path | None = None,
) -> TrainedRun:
    """Pretrain the teacher with cross-entropy (`vanilla` on the teacher architecture).

    With `weights`, the teacher starts from that file: its SHA-256 and its validation top-1 before
    any training are recorded, and `train.epochs` (0 allowed) epochs fine-tune it.
    """
    data = load_prepared(data_path, ("train", "val"))
    check_batch_size(data, cfg.train, "train_teacher")
    teacher = create_model(cfg.arch, data.num_classes, data.image_shape[0])
    imported: dict[str, float | str] = {}
    if weights is not None:
        imported["teacher/imported_sha256"] = import_weights(teacher, cfg.arch, weights)
        val = make_batches(data, "val", cfg.train.batch_size, None, runtime, seed)
        prepare_module(teacher, runtime)
        imported["val/top1_imported"] = topk_accuracy(predict(teacher, val, runtime), val.labels, 1)
        log.info(
            "imported %s (sha256 %s): val top-1 %.2f%% before training",
            weights,
            imported["teacher/imported_sha256"][:12],
            100 * imported["val/top1_imported"],
        )
    elif cfg.train.epochs == 0:
        raise ConfigError(
            "params.train_teacher.train.epochs is 0 but no --weights were given: "
            "nothing would train the teacher"
        )
    if cfg.train.epochs == 0:
        top1 = imported["val/top1_imported"]
        result = FitResult(history=[], best_epoch=0, best_val_top1=top1, last_val_top1=top1)
        metrics = {**imported, "params/trainable": 0}
    else:
        objective = build_objective("vanilla", teacher, None, None)
        resume = _resume_file(
            extras,
            "teacher",
            as_dict(cfg),
            sha256_file(data_path),
            seed,
            runtime.describe(),
            imported.get("teacher/imported_sha256"),
        )
        result, _ = _fit("teacher", objective, data, cfg.train, runtime, seed, extras, resume)
        metrics = {**imported, **_summary(result, count_parameters(teacher))}
    return TrainedRun(
        "teacher", data, result, {"teacher": (cfg.arch, teacher)}, as_dict(cfg), metrics
    )


def run_distill(
    objective_name: str,
    data_path: Path,
    teacher_path: Path,
    cfg: DistillConfig,
    runtime: Runtime,
    seed: int,
    extras: Extras = Extras(),
) -> TrainedRun:
    """Train the student with `objective_name` against the frozen teacher from `teacher_path`."""
    OBJECTIVES.get(objective_name)  # an unknown name fails here, listing the valid ones
    data = load_prepared(data_path, ("train", "val"))
    check_batch_size(data, cfg.train, "distill")
    ckpt = load_checkpoint(teacher_path)
    if ckpt.num_classes != data.num_classes or ckpt.in_channels != data.image_shape[0]:
        raise CheckpointError(
            f"teacher {teacher_path} was trained for {ckpt.num_classes} classes x "
            f"{ckpt.in_channels} channels, the data has {data.num_classes} x "
            f"{data.image_shape[0]}; rerun train_teacher on this data"
        )
    teacher = ckpt.build()
    student = create_model(cfg.arch, data.num_classes, data.image_shape[0])
    objective_cfg = cfg.objective(objective_name)
    objective = build_objective(objective_name, student, teacher, objective_cfg)
    resume = _resume_file(
        extras,
        objective_name,
        cfg.arch,
        as_dict(cfg.train),
        as_dict(objective_cfg),
        sha256_file(data_path),
        sha256_file(teacher_path),
        seed,
        runtime.describe(),
    )
    result, extra_top1 = _fit(
        objective_name, objective, data, cfg.train, runtime, seed, extras, resume
    )
    trainable = sum(p.numel() for p in objective.parameters() if p.requires_grad)
    metrics = {
        **_summary(result, trainable),
        **extra_top1,
        "params/student": count_parameters(student),
        "params/teacher": count_parameters(teacher),
    }
    networks = {"student": (cfg.arch, student)}
    archs = {"teacher": ckpt.arch, "student": cfg.arch}
    for role, (net, arch_of) in objective.extra_networks().items():
        networks[role] = (archs[arch_of], net)
    params = {
        "arch": cfg.arch,
        "objective": objective_name,
        "train": as_dict(cfg.train),
        objective_name: as_dict(objective_cfg),
        "teacher_arch": ckpt.arch,
    }
    return TrainedRun(objective_name, data, result, networks, params, metrics)


def save_run(
    run: TrainedRun, checkpoints: dict[str, Path], metrics_path: Path, live_dir: Path, seed: int
) -> None:
    """Write each network's checkpoint, the run's metrics JSON and its history picture."""
    if not world().is_main:  # under torchrun one process writes the files
        return
    for role, path in checkpoints.items():
        arch, net = run.networks[role]
        save_checkpoint(
            path,
            net,
            arch=arch,
            role=role,
            data=run.data,
            params={**run.params, "seed": seed},
            metrics=run.metrics,
        )
        log.info("wrote %s (%s, %s)", path, role, arch)
    write_json(metrics_path, run.metrics)
    plot_history(live_dir / "history.png", run.fit.history, title=run.name)
