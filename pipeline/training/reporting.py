"""Pictures for people (history, confusion matrices) and confusion data for `dvc plots`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt
import torch

from pipeline.core.files import atomic_path


def plot_history(path: Path, history: Sequence[dict[str, float]], title: str) -> None:
    """A PNG for people: loss and top-1 per epoch (the per-epoch data itself is dvclive's)."""
    if not history:  # an imported teacher used as it is: nothing was trained
        fig, ax = plt.subplots(figsize=(4, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, f"{title}: no training epochs", ha="center", va="center")
        save_figure(fig, path)
        return
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax_loss.plot(epochs, [row["train/loss"] for row in history], marker="o", label="train loss")
    ax_loss.plot(epochs, [row["val/loss"] for row in history], marker="o", label="val CE")
    ax_acc.plot(epochs, [100 * row["train/top1"] for row in history], marker="o", label="train")
    ax_acc.plot(epochs, [100 * row["val/top1"] for row in history], marker="o", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss")
    ax_acc.set(xlabel="epoch", ylabel="top-1 (%)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig: plt.Figure, path: Path) -> None:
    """Save a matplotlib figure as PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def confusion_matrix(
    predictions: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Counts (K, K): row = true class, column = predicted class."""
    flat = labels.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes**2).view(num_classes, num_classes)


def plot_confusion(path: Path, matrix: torch.Tensor, classes: Sequence[str], title: str) -> None:
    """Draw a row-normalised confusion matrix with the counts written in the cells."""
    k = len(classes)
    rates = matrix.float() / matrix.sum(1, keepdim=True).clamp(min=1)
    size = max(4.0, 0.45 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                color = "white" if rates[i, j] > 0.5 else "black"
                ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7, color=color)
        ax.set_xticks(range(k), classes, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(k), classes, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    save_figure(fig, path)


MARKERS = "osD^v<>pPX*h"


def plot_curves(path: Path, curves: dict[str, Sequence[float]], ylabel: str) -> None:
    """One line per name: value against epoch (1-based); each with its own colour and marker
    (tab20's twenty colours), so no two series look alike."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colours = plt.get_cmap("tab20")
    for i, (name, values) in enumerate(curves.items()):
        style = {"color": colours(i % 20), "marker": MARKERS[i % len(MARKERS)]}
        ax.plot(range(1, len(values) + 1), values, label=name, **style)
    ax.set(xlabel="epoch", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)
