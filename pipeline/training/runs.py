"""Teacher pretraining and distillation runs: data + networks + objective -> `fit` -> outputs."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import nn

from pipeline.core.config import DistillConfig, TeacherConfig, TrainConfig, as_dict
from pipeline.core.distributed import world
from pipeline.core.errors import CheckpointError, ConfigError
from pipeline.core.files import sha256_file, write_metrics
from pipeline.core.inputs import InputSpec, renormalise_input, run_spec
from pipeline.core.runtime import Runtime, prepare_module, seed_everything
from pipeline.data.batches import make_batches
from pipeline.data.datasets import Prepared, load_prepared
from pipeline.models import check_model_name
from pipeline.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from pipeline.models.pretrained import imported_metrics, start_network
from pipeline.models.staged import count_parameters
from pipeline.objectives import OBJECTIVES, build_objective
from pipeline.objectives.base import Objective
from pipeline.training.batchnorm import near_chance, recalibrate_all, val_top1
from pipeline.training.engine import FitHooks, FitResult, fit
from pipeline.training.inference import predict, topk_accuracy
from pipeline.training.reporting import plot_history
from pipeline.training.resume import ResumeFile, code_fingerprint

log = logging.getLogger(__name__)


@dataclass
class TrainedRun:
    """What a training stage produced, ready to be written by `save_run`."""

    name: str
    data: Prepared
    fit: FitResult
    networks: dict[str, tuple[str, nn.Module]]  # role -> (arch, network); "student"/"teacher" first
    params: dict
    metrics: dict[str, Any] = field(default_factory=dict)
    specs: dict[str, InputSpec] = field(default_factory=dict)  # role -> what it reads


@dataclass(frozen=True)
class Extras:
    """Optional additions to a training run."""

    on_epoch: Callable[[nn.Module], dict[str, float]] | None = None  # extra history columns
    on_row: Callable[[dict[str, float]], None] | None = None  # each finished epoch (live logs)
    state: Path | None = None  # resumable training state, rewritten after every epoch


def _resume_file(extras: Extras, *identity: object) -> ResumeFile | None:
    if extras.state is None:
        return None
    identity = (*identity, code_fingerprint())
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


DIVERGED = 1.5  # the first epoch's mean cross-entropy above this times ln K: unstable training


def diverged_early(first_epoch_ce: float | None, num_classes: int) -> str | None:
    """One line when the first epoch's mean cross-entropy is far above chance level (ln K):
    training went unstable before it recovered, which costs accuracy.

    Measured on 32-px photos from scratch, 10 classes (ln K = 2.30), batch 64, 3 epochs: at lr
    0.1 torchvision's MobileNetV2 (first-epoch CE 4.6, 50 % validation top-1), timm's
    MobileNetV3-Small (3.9, 35 %) and torchvision's ResNet-18 with its own init (4.9, 46 %); at
    lr 0.05 with a warm-up epoch they stayed at or below 3.2 (69 %, 57-61 %, 74 %). An untrained
    network's CE alone can exceed ln K, hence the margin.
    """
    if first_epoch_ce is None or first_epoch_ce <= DIVERGED * math.log(num_classes):
        return None
    return (
        f"the first epoch's cross-entropy {first_epoch_ce:.2f} is far above chance level "
        f"(ln {num_classes} = {math.log(num_classes):.2f}): training went unstable before it "
        f"recovered, which costs accuracy. Lower train.optim.lr (0.05 from scratch, 0.01 to "
        f"fine-tune pretrained weights) and warm up (train.schedule.warmup_epochs: 1)"
    )


def fit_and_measure(
    name: str,
    objective: Objective,
    data: Prepared,
    train: TrainConfig,
    runtime: Runtime,
    seed: int,
    extras: Extras,
    resume: ResumeFile | None,
    spec: InputSpec,
) -> tuple[FitResult, dict[str, float]]:
    """Train, re-estimate BatchNorm statistics, and measure every saved network on val."""
    train_batches = make_batches(
        data, "train", train.batch_size, train.augment, runtime, seed, spec
    )
    val = make_batches(data, "val", train.batch_size, None, runtime, seed, spec)
    hooks = FitHooks(on_epoch=extras.on_epoch, on_row=extras.on_row, resume=resume)
    result = fit(objective, train_batches, val, train, runtime, name, hooks)
    role = "teacher" if name == "teacher" else "student"
    extra = {role: e.network for role, e in objective.extra_networks().items()}
    networks = {role: objective.deployable(), **extra}
    # fit validated the deployable after its last epoch, and nothing has changed it since.
    metrics, saved = recalibrate_all(
        name, networks, {role: result.last_val_top1}, data, train, runtime, seed, spec, val
    )
    metrics["val/top1_final"] = saved[role]  # the saved network, after BatchNorm re-estimation
    first_ce = result.history[0].get("train/student/ce") if result.history else None
    for warning in (
        near_chance(saved[role], result.history[-1]["train/top1"], data.num_classes),
        diverged_early(first_ce, data.num_classes),
    ):
        if warning:
            log.warning("warning: %s: %s", name, warning)
    metrics |= {f"{r}/val_top1": saved[r] for r in extra}
    return result, metrics


def test_each_epoch(data_path: Path, runtime: Runtime) -> Callable[[nn.Module], dict[str, float]]:
    """Test top-1 of the network after each epoch, in fp32 (a history column: never chooses)."""
    test = make_batches(load_prepared(data_path, ("test",)), "test", 500, None, runtime.fp32(), 0)

    def measure(network: nn.Module) -> dict[str, float]:
        logits = predict(network, test, runtime.fp32())
        return {"test/top1": topk_accuracy(logits, test.labels.cpu(), 1)}

    return measure


def _test_summary(h: list[dict[str, float]]) -> dict[str, float]:
    """Best and last epoch on test, where the history measured it (`distill.test_curve`)."""
    if not h or "test/top1" not in h[-1]:
        return {}
    best = max(h, key=lambda r: r["test/top1"])
    return {
        "test/top1_last": h[-1]["test/top1"],
        "test/top1_best": best["test/top1"],
        "test/best_epoch": int(best["epoch"]),
    }


def _summary(result: FitResult, trainable: int) -> dict[str, float]:
    h = result.history
    return _test_summary(h) | {
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


def run_teacher(
    data_path: Path, cfg: TeacherConfig, runtime: Runtime, extras: Extras = Extras()
) -> TrainedRun:
    """Pretrain the teacher with cross-entropy (`vanilla` on the teacher architecture).

    With `cfg.weights`, the teacher starts from them: their origin, SHA-256 and validation top-1
    before any training are recorded, and `train.epochs` (0 allowed) epochs fine-tune it.
    """
    seed = cfg.seed
    seed_everything(seed)
    check_model_name(cfg.arch, "params.train_teacher.arch")
    data = load_prepared(data_path, ("train", "val"))
    check_batch_size(data, cfg.train, "train_teacher")
    teacher, imported = start_network(cfg.arch, cfg.weights, data, "train_teacher")
    spec = run_spec(data, cfg.train, imported.spec if imported else None, None)
    metrics: dict[str, Any] = imported_metrics(imported)
    if imported is not None:
        val = make_batches(data, "val", cfg.train.batch_size, None, runtime, seed, spec)
        prepare_module(teacher, runtime)
        metrics["val/top1_imported"] = val_top1(teacher, val, runtime)
        log.info("teacher: val top-1 %.2f%% before training", 100 * metrics["val/top1_imported"])
    if cfg.train.epochs == 0:
        if imported is None or any("classes" in note for note in imported.notes):
            raise ConfigError(
                "params.train_teacher.train.epochs is 0, but "
                + ("no weights are given" if imported is None else "the classifier is new")
                + ": nothing would train the teacher; train at least one epoch"
            )
        top1 = metrics["val/top1_imported"]
        result = FitResult(history=[], best_epoch=0, best_val_top1=top1, last_val_top1=top1)
        metrics["params/trainable"] = 0
    else:
        objective = build_objective("vanilla", teacher, None, None)
        resume = _resume_file(
            extras, "teacher", as_dict(cfg), sha256_file(data_path), seed, runtime.describe()
        )
        result, fitted = fit_and_measure(
            "teacher", objective, data, cfg.train, runtime, seed, extras, resume, spec
        )
        metrics |= _summary(result, count_parameters(teacher)) | fitted
    networks = {"teacher": (cfg.arch, teacher)}
    return TrainedRun("teacher", data, result, networks, as_dict(cfg), metrics, {"teacher": spec})


def _check_student_epochs(train: TrainConfig) -> None:
    """Zero epochs make sense for an imported teacher used as it is, never for a student."""
    if train.epochs == 0:
        raise ConfigError(
            "params.distill.train.epochs is 0: every objective trains its student; set at least 1"
        )


def _load_teacher(teacher_path: Path, data: Prepared) -> tuple[Any, nn.Module]:
    ckpt = load_checkpoint(teacher_path)
    if ckpt.num_classes != data.num_classes or ckpt.in_channels != data.image_shape[0]:
        raise CheckpointError(
            f"teacher {teacher_path} was trained for {ckpt.num_classes} classes x "
            f"{ckpt.in_channels} channels, the data has {data.num_classes} x "
            f"{data.image_shape[0]}; rerun train_teacher on this data"
        )
    return ckpt, ckpt.build()


def run_distill(
    objective_name: str,
    data_path: Path,
    teacher_path: Path,
    cfg: DistillConfig,
    runtime: Runtime,
    extras: Extras = Extras(),
) -> TrainedRun:
    """Train the student with `objective_name` against the frozen teacher from `teacher_path`.

    `cfg.seed` fixes the student's initialisation and data order whatever the objective.
    """
    OBJECTIVES.get(objective_name)  # an unknown name fails here, listing the valid ones
    _check_student_epochs(cfg.train)
    seed = cfg.seed
    seed_everything(seed)
    check_model_name(cfg.arch, "params.distill.arch")
    data = load_prepared(data_path, ("train", "val"))
    check_batch_size(data, cfg.train, "distill")
    ckpt, teacher = _load_teacher(teacher_path, data)
    student, imported = start_network(cfg.arch, cfg.weights, data, "distill")
    spec = run_spec(data, cfg.train, imported.spec if imported else None, ckpt.spec)
    renormalise_input(teacher, spec, ckpt.spec)
    objective_cfg = cfg.objective(objective_name)
    objective = build_objective(objective_name, student, teacher, objective_cfg)
    if cfg.test_curve and extras.on_epoch is None:
        extras = replace(extras, on_epoch=test_each_epoch(data_path, runtime))
    resume = _resume_file(
        extras,
        objective_name,
        cfg.arch,
        cfg.weights,
        as_dict(cfg.train),
        as_dict(objective_cfg),
        sha256_file(data_path),
        sha256_file(teacher_path),
        seed,
        runtime.describe(),
    )
    result, fitted = fit_and_measure(
        objective_name, objective, data, cfg.train, runtime, seed, extras, resume, spec
    )
    trainable = sum(p.numel() for p in objective.parameters() if p.requires_grad)
    metrics = {
        **imported_metrics(imported),
        **_summary(result, trainable),
        **fitted,
        "params/student": count_parameters(student),
        "params/teacher": count_parameters(teacher),
    }
    params = {
        "arch": cfg.arch,
        "weights": cfg.weights,
        "objective": objective_name,
        "train": as_dict(cfg.train),
        objective_name: as_dict(objective_cfg),
        "teacher_arch": ckpt.arch,
        "seed": seed,
    }
    networks, specs = _saved_networks(objective, cfg.arch, spec, ckpt)
    return TrainedRun(objective_name, data, result, networks, params, metrics, specs)


def _saved_networks(
    objective: Objective, arch: str, spec: InputSpec, teacher: Checkpoint
) -> tuple[dict[str, tuple[str, nn.Module]], dict[str, InputSpec]]:
    """Every network a distillation run saves, by role: its architecture and what it reads."""
    networks = {"student": (arch, objective.deployable())}
    archs, specs = {"teacher": teacher.arch, "student": arch}, {"student": spec}
    for role, extra in objective.extra_networks().items():
        networks[role] = (archs[extra.arch_of], extra.network)
        specs[role] = teacher.spec if extra.arch_of == "teacher" else spec
    return networks, specs


DEPLOYED = ("teacher", "student")  # the roles whose per-epoch validation `fit` measured


# For dvc exp show; test/ only where distill.test_curve measured it.
HEADLINE = ("val/top1_best", "val/top1_final", "improved_teacher/val_top1", "test/top1_*")


def save_checkpoints(run: TrainedRun, checkpoints: dict[str, Path]) -> None:
    """Write each network's self-describing checkpoint (the main process alone, under torchrun)."""
    if not world().is_main:
        return
    for role, path in checkpoints.items():
        arch, net = run.networks[role]
        save_checkpoint(
            path,
            net,
            arch=arch,
            role=role,
            data=run.data,
            params=run.params,
            metrics=run.metrics,
            spec=run.specs.get(role),
            curve=[row["val/top1"] for row in run.fit.history] if role in DEPLOYED else (),
        )
        log.info("wrote %s (%s, %s)", path, role, arch)


def save_run(
    run: TrainedRun,
    checkpoints: dict[str, Path],
    metrics: Path,
    live_dir: Path,
    record: Path | None = None,
) -> None:
    """Write each network's checkpoint, the run's metrics JSON (headline figures when a `record`
    takes them all) and its history picture."""
    if not world().is_main:  # under torchrun one process writes the files
        return
    save_checkpoints(run, checkpoints)
    write_metrics(record, metrics, run.metrics, HEADLINE)
    plot_history(live_dir / "history.png", run.fit.history, title=run.name)
