"""Which student ships: the best on validation (never test), and whether distillation helped.

`export.objective: best` ships the student with the highest validation top-1: one per objective of
`distill.objectives`, or with `distill.candidates` one per objective and architecture within
budget (ties go to the faster INT8 file in profile's figures, then to the first in the list);
naming an objective ships its student (its best architecture). Either way the choice, every
student's validation top-1, why each other one was not chosen and the reason are recorded, and
two situations are diagnosed in one line each (among the shipped architecture's students), with
the likely cause and the fix:

- the teacher is not clearly better than the `vanilla` student (by less than
  `export.teacher_margin` on validation): there is little for distillation to transfer;
- every distilled student ends below `vanilla` on validation: distillation did not pay off on
  this schedule (or the teacher is the problem, when the first line also holds).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.core.config import SHIP_BEST, ExportConfig
from pipeline.core.errors import CheckpointError, ConfigError, GateError
from pipeline.core.students import student_runs
from pipeline.models.checkpoint import load_checkpoint

BASELINE = "vanilla"  # the student without distillation, what distillation must beat


@dataclass(frozen=True)
class Selection:
    """The shipped objective, why, every candidate's validation top-1, and the diagnoses."""

    objective: str  # the shipped student's name: its objective, `/<arch folder>` with candidates
    reason: str
    val_top1: dict[str, float]  # student -> its validation top-1, in list order
    teacher_val_top1: float | None
    notes: list[str] = field(default_factory=list)  # one line each, for the log and the card
    arch: str = ""  # the shipped student's architecture
    why_not: dict[str, str] = field(default_factory=dict)  # every other student: why not it
    int8_p90_ms: dict[str, float] = field(default_factory=dict)  # student -> profile's figure

    def metrics(self) -> dict[str, Any]:
        """Flat metric keys for records/export.json."""
        out: dict[str, Any] = {
            "selection/objective": self.objective,
            "selection/arch": self.arch,
            "selection/reason": self.reason,
            "selection/notes": " | ".join(self.notes),
        }
        out |= {f"selection/{name}/val_top1": top1 for name, top1 in self.val_top1.items()}
        out |= {f"selection/{name}/why_not": why for name, why in self.why_not.items()}
        out |= {f"selection/{name}/int8_p90_ms": ms for name, ms in self.int8_p90_ms.items()}
        if self.teacher_val_top1 is not None:
            out["selection/teacher/val_top1"] = self.teacher_val_top1
        return out


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def _objective_of(name: str) -> str:
    return name.split("/")[0]


def rank(
    requested: str, val_top1: Mapping[str, float], p90: Mapping[str, float] | None = None
) -> list[str]:
    """The students of `requested` (every one when it is `best`), best first: validation top-1,
    then the faster file (`p90`, ms per student), then list order."""
    pool = dict(val_top1)
    if requested != SHIP_BEST:
        pool = {n: t for n, t in val_top1.items() if _objective_of(n) == requested}
        if not pool:
            raise ConfigError(
                f"params.export.objective: {requested!r} was not trained; choose best or one of "
                f"{', '.join(dict.fromkeys(map(_objective_of, val_top1)))}"
            )
    speed = p90 or {}
    return sorted(pool, key=lambda name: (-pool[name], speed.get(name, 0.0)))  # stable: ties


def pick(
    requested: str,
    val_top1: Mapping[str, float],
    p90: Mapping[str, float] | None = None,
    alone: str = "the only one trained",
) -> tuple[str, str]:
    """The student to ship and why: the best on validation, among the students of `requested`
    unless it is `best`; ties go to the faster (`p90`, ms per student), then to the first."""
    ranked = rank(requested, val_top1, p90)
    best, speed = ranked[0], p90 or {}
    if requested != SHIP_BEST and len(ranked) == 1:
        return best, f"named in params (export.objective: {requested})"
    others = [f"{name} {_pct(top1)}" for name, top1 in val_top1.items() if name != best]
    versus = f" (others: {', '.join(others)})" if others else f" ({alone})"
    tied = [name for name in ranked[1:] if val_top1[name] == val_top1[best]]
    if tied:
        faster = any(speed.get(n, 0.0) != speed.get(best, 0.0) for n in tied)
        rule = "the faster ships" if faster else "the first in distill.objectives ships"
        versus += f"; tied with {', '.join(tied)}: {rule}"
    named = "" if requested == SHIP_BEST else f" among {requested}'s students"
    return best, f"highest validation top-1{named}, {_pct(val_top1[best])}{versus}"


def why_not(
    shipped: str, val_top1: Mapping[str, float], p90: Mapping[str, float] | None = None
) -> dict[str, str]:
    """For every student but the shipped one, the reason in words."""
    reasons = {}
    for name, top1 in val_top1.items():
        if name == shipped:
            continue
        if top1 < val_top1[shipped]:
            reasons[name] = f"lower validation top-1 ({_pct(top1)} < {_pct(val_top1[shipped])})"
        elif top1 > val_top1[shipped]:
            reasons[name] = f"export.objective names {_objective_of(shipped)}"
        elif p90 and p90.get(name, 0.0) > p90.get(shipped, 0.0):
            reasons[name] = f"tied on validation top-1, slower (INT8 p90 {p90[name]:.3f} ms)"
        else:
            reasons[name] = "tied on validation top-1, later in the list"
    return reasons


def _same_arch(val_top1: Mapping[str, float], shipped: str) -> dict[str, float]:
    """The students of the shipped one's architecture, by objective (for the diagnoses)."""
    arch = shipped.split("/", 1)[1:]
    return {_objective_of(n): t for n, t in val_top1.items() if n.split("/", 1)[1:] == arch}


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
    p90: Mapping[str, float] | None = None,
    alone: str = "the only one trained",
) -> Selection:
    """Choose the student to ship from each one's validation top-1 and diagnose the run;
    `alone` says what a sole student is the only one of."""
    name, reason = pick(requested, val_top1, p90, alone)
    peers = _same_arch(val_top1, name)
    notes = diagnose(peers, teacher_val_top1, _objective_of(name), teacher_margin, epochs)
    return Selection(
        name, reason, dict(val_top1), teacher_val_top1, notes, why_not=why_not(name, val_top1, p90)
    )


def _val_top1(metrics: Mapping[str, Any]) -> float | None:
    """A network's validation top-1 as saved (after BatchNorm re-estimation), from its metrics."""
    for key in ("val/top1_final", "val/top1_imported"):  # trained; or imported and used as is
        if key in metrics:
            return float(metrics[key])
    return None


# What a student's shipped file costs: profile's hold_budget report (budget/passed, figures).
Fits = Callable[[str, Path], Mapping[str, Any]]


def _closest(over: Mapping[str, Mapping[str, Any]]) -> str:
    """The over-budget student nearest its limits (the smallest worst figure/limit ratio)."""
    return min(over, key=lambda name: over[name]["budget/excess"])


def first_within_budget(
    ranked: Sequence[str], files: Mapping[str, Path], fits: Fits
) -> tuple[str, dict[str, str]]:
    """The first student of `ranked` whose shipped file meets the budget, and why each one before
    it did not; a GateError naming the closest one when none does."""
    over: dict[str, Mapping[str, Any]] = {}
    for name in ranked:
        report = fits(name, files[name])
        if report["budget/passed"]:
            why = {n: f"over budget once shipped ({r['budget/failures']})" for n, r in over.items()}
            return name, why
        over[name] = report
    closest = _closest(over)
    raise GateError(
        f"no student's shipped file meets the budget; the closest, {closest}: "
        f"{over[closest]['budget/failures']}; relax those budget limits or add a smaller "
        "architecture to distill.candidates (profile's figures are for untrained files: the "
        "INT8 accuracy control's fp32 layers can make a trained file slower and larger)"
    )


def choose_student(
    runs: Path,
    objectives: Sequence[str],
    teacher: Path,
    cfg: ExportConfig,
    int8_p90: Mapping[str, float] | None = None,
    fits: Fits | None = None,
) -> tuple[Selection, Path]:
    """Select among every student under `runs` (objective by objective, in list order) by the
    validation top-1 each checkpoint recorded; `int8_p90` (ms by architecture, from profile)
    breaks ties. With `fits` (a budget), the best whose shipped file meets it ships, each better
    one is recorded as over budget. Returns the selection and the chosen file."""
    val_top1, archs, files = {}, {}, {}
    for objective in objectives:  # each read as found: the first bad file is the one named
        for name, folder in student_runs(runs, (objective,)).items():
            files[name] = folder / "student.pt"
            ckpt = load_checkpoint(files[name])
            top1 = _val_top1(ckpt.metrics)
            if top1 is None:
                raise CheckpointError(
                    f"{files[name]} records no validation top-1; rerun `dvc repro distill`"
                )
            val_top1[name], archs[name] = top1, ckpt.arch
    p90 = {n: int8_p90[a] for n, a in archs.items() if a in int8_p90} if int8_p90 else None
    over: dict[str, str] = {}
    if fits is not None:
        over = first_within_budget(rank(cfg.objective, val_top1, p90), files, fits)[1]
    eligible = {n: t for n, t in val_top1.items() if n not in over}
    shipped = pick(cfg.objective, eligible, p90)[0]
    chosen = files[shipped]
    epochs = load_checkpoint(chosen).params.get("train", {}).get("epochs", 0)
    teacher_top1 = _val_top1(load_checkpoint(teacher).metrics)
    alone = "the only one within budget" if over else "the only one trained"
    selection = select_student(
        cfg.objective, eligible, teacher_top1, cfg.teacher_margin, epochs, p90, alone
    )
    why = {n: over.get(n) or selection.why_not[n] for n in val_top1 if n != shipped}
    if over:
        reason = f"{selection.reason}; better on validation but over budget: {', '.join(over)}"
        selection = replace(selection, reason=reason)
    return replace(
        selection, arch=archs[shipped], int8_p90_ms=p90 or {}, val_top1=val_top1, why_not=why
    ), chosen
