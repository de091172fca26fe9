"""Resumable training: the whole training state after every epoch, written atomically.

The state holds every network of the objective (a teacher whose BatchNorm statistics drift too),
the optimiser, the learning-rate schedule, the loss scaler, the random generators (torch's and the
batch iterator's), the epoch and the history, so a run killed at any moment and started again ends
with the same weights as one that was never interrupted. A fingerprint of everything that defines
the run (params, data and teacher hashes, seed, and the library's own source) guards against
resuming a different run.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.core.errors import CheckpointError
from pipeline.core.files import load_tensors, save_tensors

FORMAT = "sokd-resume/1"
PACKAGE = Path(__file__).resolve().parents[1]  # the pipeline library


def loaded_sources(root: Path = PACKAGE) -> list[Path]:
    """The source files under `root` of every module this process has imported, sorted."""
    files = {
        Path(module.__file__).resolve()
        for module in list(sys.modules.values())
        if getattr(module, "__file__", None)
    }
    return sorted(f for f in files if f.suffix == ".py" and f.is_relative_to(root))


def code_fingerprint(files: Iterable[Path] | None = None, root: Path = PACKAGE) -> str:
    """SHA-256 of the code a run imported (path and bytes): by default every module of `root`
    loaded in this process, which after set-up is everything the run executes.

    The code defines a run as much as its params: after an edit to it, `dvc repro` reruns the
    training stage, and a finished state written by the old code would otherwise be "resumed"
    into the old results under the new code's name. An edit to a module the run never imports
    (another objective, another architecture) leaves the state valid.
    """
    digest = hashlib.sha256()
    for path in sorted(loaded_sources(root) if files is None else files):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class ResumeFile:
    path: Path
    fingerprint: str  # identifies the run; a state with another fingerprint is ignored


def save_state(
    where: ResumeFile,
    epoch: int,
    history: list[dict[str, float]],
    modules: dict[str, Any],
    batches_rng: torch.Tensor,
) -> None:
    """Write the state after `epoch` completed epochs; `modules` hold state_dict()-able objects."""
    payload = {
        "format": FORMAT,
        "fingerprint": where.fingerprint,
        "epoch": epoch,
        "history": history,
        "modules": {name: m.state_dict() for name, m in modules.items()},
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "batches_rng": batches_rng,
    }
    save_tensors(where.path, payload)


def load_state(where: ResumeFile) -> dict[str, Any] | None:
    """The saved state of this run, or None when there is none (or it belongs to another run)."""
    if not where.path.is_file():
        return None
    state = load_tensors(
        where.path, CheckpointError, "training state", "delete it to start the run afresh"
    )
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{where.path} is not a training state; delete it to start afresh")
    if state["fingerprint"] != where.fingerprint:
        return None  # params, data, teacher or code changed: this is a new run
    return state


def restore(state: dict[str, Any], modules: dict[str, Any]) -> tuple[int, list[dict[str, float]]]:
    """Load a saved state into `modules` and the global generators; return (epoch, history)."""
    for name, module in modules.items():
        module.load_state_dict(state["modules"][name])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["epoch"]), list(state["history"])
