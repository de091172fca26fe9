"""Where the distilled students live, and which architectures are trained.

Without `distill.candidates`, `distill@<objective>` trains `distill.arch` into
`models/distill/<objective>/` and the student is named by its objective (`sokd`). With
candidates, it trains each candidate that `profile` found within budget into
`models/distill/<objective>/<arch>/` (`arch_folder`), and the student is named
`<objective>/<arch folder>` (`sokd/timm_resnet10t`) in every metric key that names students.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from pipeline.core.errors import CheckpointError, ConfigError


def arch_folder(arch: str) -> str:
    """A file-system name for an architecture (`timm:resnet10t` -> `timm_resnet10t`)."""
    return arch.replace(":", "_").replace("/", "_")


def student_runs(runs: Path, objectives: Sequence[str]) -> dict[str, Path]:
    """Each trained student's folder by name, objective by objective in list order (and, within
    an objective, its architectures by folder name)."""
    if runs.is_file():
        raise CheckpointError(
            f"--runs {runs} is a file; give the folder of `distill` outputs (models/distill)"
        )
    found: dict[str, Path] = {}
    for objective in objectives:
        folder = runs / objective
        if (folder / "student.pt").is_file():
            found[objective] = folder
            continue
        inner = sorted(p for p in folder.glob("*/student.pt")) if folder.is_dir() else []
        if not inner:
            raise CheckpointError(
                f"student not found: {folder}/student.pt; run `dvc repro distill`"
            )
        found |= {f"{objective}/{p.parent.name}": p.parent for p in inner}
    return found


def within_budget(path: Path, candidates: Sequence[str]) -> tuple[str, ...]:
    """The candidates `profile` found within budget (its `--within` file), in candidate order."""
    try:
        listed = json.loads(path.read_text())["within_budget"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(
            f"{path} is not profile's list of candidates within budget ({err}); "
            "run `dvc repro profile`"
        ) from None
    if stray := [a for a in listed if a not in candidates]:
        raise ConfigError(
            f"{path} lists {', '.join(stray)}, not in distill.candidates; "
            "run `dvc repro profile` after changing the candidates"
        )
    return tuple(a for a in candidates if a in listed)
