"""OBJECTIVES registry: name in params.yaml -> Objective class called as (student, teacher, cfg).

One module per objective, named after it (`objectives/<name>.py`) and listed in NAMES; the
registry is lazy, so this package's index imports no objective (nor torch), and a stage imports
only the objective it trains.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pipeline.core.errors import ConfigError
from pipeline.core.registry import Registry

if TYPE_CHECKING:  # annotations only: listing or checking names imports no torch module
    from torch import nn

    from pipeline.objectives.base import Objective

NAMES = (
    "at", "dist", "dkd", "dml", "fitnet", "kd", "kd_dml",
    "sokd", "sokd_at", "sokd_fitnet", "vanilla",
)  # fmt: skip
OBJECTIVES: Registry[Callable[[nn.Module, nn.Module | None, Any], Objective]] = Registry(
    "objective", package=__name__, names=NAMES
)


def build_objective(
    name: str, student: nn.Module, teacher: nn.Module | None, cfg: Any
) -> Objective:
    """Build objective `name` around `student` (and a frozen `teacher` where it uses one)."""
    build = OBJECTIVES.get(name)
    needs = getattr(build, "teacher_kind", None)  # a FrozenTeacherObjective's kind of teacher
    if needs is not None and not isinstance(teacher, needs):
        raise ConfigError(f"objective {name!r} needs a pretrained teacher checkpoint")
    try:
        return build(student, teacher, cfg)
    except ConfigError as err:  # a setting the objective refused: name its key in params
        message = str(err)
        if message.startswith("params."):
            raise
        raise ConfigError(f"params.distill.{name}.{message}") from None
