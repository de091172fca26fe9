"""The front a budget chooses on: every trained student's validation top-1 against its INT8
file's p90 batch-1 latency (profile's figure for its architecture), the budget drawn, the shipped
student marked. Validation, never test: it is what chose."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt

from pipeline.core.files import atomic_path


def _save(fig: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def front_points(selection: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Student -> (INT8 p90 ms, validation top-1 %) from export's record."""
    points = {}
    for key, ms in selection.items():
        if key.startswith("selection/") and key.endswith("/int8_p90_ms"):
            name = key.removeprefix("selection/").removesuffix("/int8_p90_ms")
            points[name] = (float(ms), 100 * float(selection[f"selection/{name}/val_top1"]))
    return points


def plot_front(path: Path, selection: dict[str, Any], latency_ms: float) -> bool:
    """Draw the front to `path`; False (a picture saying so) when export recorded no latencies."""
    points = front_points(selection)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    if not points:
        ax.axis("off")
        ax.text(0.5, 0.5, "no latencies recorded (export without --profile)", ha="center")
        _save(fig, path)
        return False
    shipped = selection.get("selection/objective")
    for name, (ms, top1) in points.items():
        mine = name == shipped
        ax.scatter(ms, top1, s=170 if mine else 40, marker="*" if mine else "o",
                   color="C3" if mine else "C0", zorder=3)  # fmt: skip
        label = f"{name} (shipped)" if mine else name
        ax.annotate(label, (ms, top1), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if latency_ms > 0:
        ax.axvline(latency_ms, color="C1", linestyle="--", label=f"budget.latency_ms {latency_ms}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set(
        xlabel="INT8 file's p90 batch-1 latency, ms (stage profile)",
        ylabel="validation top-1 (%)",
        title="Every trained student: what the budget chose from",
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    return True
