"""Final numbers on the test split: accuracy, size, cost and agreement of every trained network."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import torch

from pipeline.core.config import EvaluateConfig
from pipeline.core.errors import CheckpointError
from pipeline.core.files import write_text
from pipeline.core.runtime import Runtime, prepare_module
from pipeline.data.batches import make_batches
from pipeline.data.datasets import load_prepared
from pipeline.models.checkpoint import load_checkpoint
from pipeline.models.staged import count_macs, count_parameters
from pipeline.training.inference import predict, topk_accuracy
from pipeline.training.reporting import confusion_matrix, plot_confusion


def _confusion(
    plots_dir: Path,
    name: str,
    predicted: torch.Tensor,
    labels: torch.Tensor,
    classes: tuple[str, ...],
    metrics: dict[str, Any],
) -> None:
    """A PNG of the confusion matrix for people; for a student, the (actual, predicted) rows DVC's
    confusion template counts (`plots/evaluate/confusion/<run>.csv`)."""
    stem = name.replace("/", "_")
    top1 = 100 * metrics[f"{name}/top1"]
    title = f"{name}: top-1 {top1:.2f}% on {len(labels)} test images"
    matrix = confusion_matrix(predicted, labels, len(classes))
    plot_confusion(plots_dir / "images" / f"confusion_{stem}.png", matrix, classes, title)
    if name.endswith("/student"):
        buf = io.StringIO()  # csv quotes class names with commas (image folders may have them)
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["actual", "predicted"])
        pairs = zip(labels.tolist(), predicted.tolist(), strict=True)
        writer.writerows((classes[a], classes[b]) for a, b in pairs)
        run = name.removesuffix("/student").replace("/", "_")
        write_text(plots_dir / "confusion" / f"{run}.csv", buf.getvalue())


def _validation_curves(checkpoints: dict[str, Any]) -> str:
    """One CSV of every trained network's validation top-1 per epoch (teacher and students),
    for one chart (`dvc plots show`). The per-epoch figures are measured with the BatchNorm
    statistics training left (a network whose statistics lag, MobileNetV3 among them, can sit
    near chance there), so each network also gets its saved figure, after re-estimation, at its
    last epoch: the `(saved)` series."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["epoch", "network", "top1"])
    for name, ckpt in checkpoints.items():
        label = name.removesuffix("/student")
        if not ckpt.curve or not (name == "teacher" or name.endswith("/student")):
            continue
        writer.writerows((epoch, label, top1) for epoch, top1 in enumerate(ckpt.curve, 1))
        saved = ckpt.metrics.get("val/top1_final")
        if saved is not None:
            writer.writerow((len(ckpt.curve), f"{label} (saved)", saved))
    return buf.getvalue()


def evaluate_all(
    data_path: Path,
    teacher_path: Path,
    run_dirs: dict[str, Path],
    cfg: EvaluateConfig,
    runtime: Runtime,
    plots_dir: Path,
) -> dict[str, Any]:
    """Evaluate the teacher and every checkpoint in `run_dirs` (run name -> folder) in fp32;
    return flat metrics.

    Keys are `teacher/<metric>` and `<run>/<role>/<metric>` (e.g. `sokd/student/top1`), plus each
    student's agreement with the teacher, its compression ratio and its gain over `vanilla/student`.
    """
    data = load_prepared(data_path, ("test",))
    runtime = runtime.fp32()
    labels = data.splits["test"].labels.cpu()
    named = {"teacher": teacher_path}
    for run, run_dir in run_dirs.items():
        if not run_dir.is_dir():
            raise CheckpointError(
                f"run directory not found: {run_dir}; run `dvc repro distill` first"
            )
        named.update({f"{run}/{pt.stem}": pt for pt in sorted(run_dir.glob("*.pt"))})
    metrics: dict[str, Any] = {"test/images": len(labels)}
    predictions: dict[str, torch.Tensor] = {}
    checkpoints = {name: load_checkpoint(path) for name, path in named.items()}
    write_text(plots_dir / "validation.csv", _validation_curves(checkpoints))
    for name, path in named.items():
        ckpt = checkpoints[name]
        if ckpt.num_classes != data.num_classes:
            raise CheckpointError(
                f"{path} predicts {ckpt.num_classes} classes, the data has {data.num_classes}"
            )
        model = prepare_module(ckpt.build(), runtime)
        # Each network reads the test images as it was trained to: its normalisation and size.
        batches = make_batches(data, "test", cfg.batch_size, None, runtime, 0, ckpt.spec)
        logits = predict(model, batches, runtime)
        predictions[name] = logits.argmax(1)
        metrics.update(
            {
                f"{name}/top1": topk_accuracy(logits, labels, 1),
                f"{name}/top5": topk_accuracy(logits, labels, 5),
                f"{name}/params": count_parameters(model),
                f"{name}/macs": count_macs(model, (ckpt.in_channels, *ckpt.image_size)),
                f"{name}/file_bytes": path.stat().st_size,
            }
        )
        if name.endswith("student") or name == "teacher":
            _confusion(plots_dir, name, predictions[name], labels, data.classes, metrics)
    # The teacher's training figures, from its self-describing checkpoint: `train_teacher`'s own
    # record is a DVC-cached output (its run cache serves every experiment with the same inputs).
    trained = checkpoints["teacher"].metrics
    for key in ("val/top1_final", "time/train_s"):
        if key in trained:
            metrics[f"teacher/{key.replace('/', '_')}"] = trained[key]
    for name in [n for n in named if n.endswith("/student")]:
        metrics[f"{name}/agreement_with_teacher"] = (
            predictions[name] == predictions["teacher"]
        ).sum().item() / len(labels)
        metrics[f"{name}/compression"] = metrics["teacher/params"] / metrics[f"{name}/params"]
        # against the vanilla student of the same architecture (`vanilla[/<arch>]/student`)
        vanilla = "/".join(["vanilla", *name.split("/")[1:]])
        if vanilla in named and name != vanilla:
            metrics[f"{name}/gain_over_vanilla"] = (
                metrics[f"{name}/top1"] - metrics[f"{vanilla}/top1"]
            )
    return metrics
