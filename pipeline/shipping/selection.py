"""Which student ships: the best on validation (never test), and whether distillation helped.

`export.objective: best` ships the objective of `distill.objectives` whose student has the highest
validation top-1 (ties go to the first in the list); naming an objective ships that one. Either
way the choice, every candidate's validation top-1 and the reason are recorded, and two
situations are diagnosed in one line each, with the likely cause and the fix:

- the teacher is not clearly better than the `vanilla` student (by less than
  `export.teacher_margin` on validation): there is little for distillation to transfer;
- every distilled student ends below `vanilla` on validation: distillation did not pay off on
  this schedule (or the teacher is the problem, when the first line also holds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.config import SHIP_BEST, ExportConfig
from pipeline.core.errors import CheckpointError, ConfigError
from pipeline.models.checkpoint import load_checkpoint

BASELINE = "vanilla"  # the student without distillation, what distillation must beat


@dataclass(frozen=True)
class Selection:
    """The shipped objective, why, every candidate's validation top-1, and the diagnoses."""

    objective: str
    reason: str
    val_top1: dict[str, float]  # objective -> its student's validation top-1, in list order
    teacher_val_top1: float | None
    notes: list[str] = field(default_factory=list)  # one line each, for the log and the card

    def metrics(self) -> dict[str, Any]:
        """Flat metric keys for records/export.json."""
        out: dict[str, Any] = {
            "selection/objective": self.objective,
            "selection/reason": self.reason,
            "selection/notes": " | ".join(self.notes),
        }
        out |= {f"selection/{name}/val_top1": top1 for name, top1 in self.val_top1.items()}
        if self.teacher_val_top1 is not None:
            out["selection/teacher/val_top1"] = self.teacher_val_top1
        return out


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def pick(requested: str, val_top1: Mapping[str, float]) -> tuple[str, str]:
    """The objective to ship and why: `requested`, or the best on validation for `best`."""
    if requested != SHIP_BEST:
        if requested not in val_top1:
            raise ConfigError(
                f"params.export.objective: {requested!r} was not trained; choose best or one of "
                f"{', '.join(val_top1)}"
            )
        return requested, f"named in params (export.objective: {requested})"
    # max() keeps the first of equal values: ties go to the first objective in the list.
    best = max(val_top1, key=lambda name: val_top1[name])
    others = [f"{name} {_pct(top1)}" for name, top1 in val_top1.items() if name != best]
    versus = f" (others: {', '.join(others)})" if others else " (the only one trained)"
    tied = [name for name, top1 in val_top1.items() if name != best and top1 == val_top1[best]]
    if tied:
        versus += f"; tied with {', '.join(tied)}: the first in distill.objectives ships"
    return best, f"highest validation top-1, {_pct(val_top1[best])}{versus}"


def diagnose(
    val_top1: Mapping[str, float],
    teacher_val_top1: float | None,
    shipped: str,
    teacher_margin: float,
    epochs: int,
) -> list[str]:
    """One line per problem found: a weak teacher, distillation that did not pay off, or a named
    objective that ships a student below `vanilla`. Empty when nothing is wrong (or no vanilla
    student was trained to compare with)."""
    if BASELINE not in val_top1:
        return []
    vanilla, notes = val_top1[BASELINE], []
    weak_teacher = teacher_val_top1 is not None and teacher_val_top1 - vanilla < teacher_margin
    if weak_teacher:
        notes.append(
            f"the teacher ({_pct(teacher_val_top1)} validation top-1) is not clearly above the "
            f"vanilla student ({_pct(vanilla)}; margin {_pct(teacher_val_top1 - vanilla)} < "
            f"export.teacher_margin {_pct(teacher_margin)}): it has little to teach. Train it "
            f"longer (train_teacher.train.epochs) or start it from pretrained weights "
            f"(train_teacher.weights)"
        )
    distilled = {name: top1 for name, top1 in val_top1.items() if name != BASELINE}
    if distilled and all(top1 < vanilla for top1 in distilled.values()):
        listed = ", ".join(f"{name} {_pct(top1)}" for name, top1 in distilled.items())
        cause = (
            "with a teacher this close to it, distillation transfers little"
            if weak_teacher
            else f"{epochs} student epoch(s) are likely too short for distillation to pay off; "
            f"train more (distill.train.epochs)"
        )
        notes.append(
            f"every distilled student ended below vanilla on validation ({listed} < "
            f"{_pct(vanilla)}): {cause}"
        )
    if shipped != BASELINE and val_top1[shipped] < vanilla:
        notes.append(
            f"export.objective ships {shipped} ({_pct(val_top1[shipped])}), below the vanilla "
            f"student ({_pct(vanilla)}) on validation; export.objective: best ships the better one"
        )
    return notes


def select_student(
    requested: str,
    val_top1: Mapping[str, float],
    teacher_val_top1: float | None,
    teacher_margin: float,
    epochs: int,
) -> Selection:
    """Choose the student to ship from each objective's validation top-1 and diagnose the run."""
    objective, reason = pick(requested, val_top1)
    notes = diagnose(val_top1, teacher_val_top1, objective, teacher_margin, epochs)
    return Selection(objective, reason, dict(val_top1), teacher_val_top1, notes)


def _val_top1(metrics: Mapping[str, Any]) -> float | None:
    """A network's validation top-1 as saved (after BatchNorm re-estimation), from its metrics."""
    for key in ("val/top1_final", "val/top1_imported"):  # trained; or imported and used as is
        if key in metrics:
            return float(metrics[key])
    return None


def choose_student(
    runs: Path, objectives: Sequence[str], teacher: Path, cfg: ExportConfig
) -> tuple[Selection, Path]:
    """Select among `runs/<objective>/student.pt` for every objective (in list order) by the
    validation top-1 each checkpoint recorded; returns the selection and the chosen file."""
    if runs.is_file():
        raise CheckpointError(
            f"--runs {runs} is a file; give the folder of `distill` outputs (models/runs)"
        )
    val_top1 = {}
    for name in objectives:
        path = runs / name / "student.pt"
        if not path.exists():
            raise CheckpointError(f"student not found: {path}; run `dvc repro distill`")
        top1 = _val_top1(load_checkpoint(path).metrics)
        if top1 is None:
            raise CheckpointError(f"{path} records no validation top-1; rerun `dvc repro distill`")
        val_top1[name] = top1
    chosen = runs / pick(cfg.objective, val_top1)[0] / "student.pt"
    epochs = load_checkpoint(chosen).params.get("train", {}).get("epochs", 0)
    teacher_top1 = _val_top1(load_checkpoint(teacher).metrics)
    selection = select_student(cfg.objective, val_top1, teacher_top1, cfg.teacher_margin, epochs)
    return selection, chosen
