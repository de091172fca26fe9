"""OBJECTIVES registry: name in params.yaml -> Objective class called as (student, teacher, cfg)."""

from collections.abc import Callable
from typing import Any

from torch import nn

from pipeline.errors import ConfigError
from pipeline.objectives.base import Objective
from pipeline.registry import Registry

OBJECTIVES: Registry[Callable[[nn.Module, nn.Module | None, Any], Objective]] = Registry(
    "objective"
)


def build_objective(
    name: str, student: nn.Module, teacher: nn.Module | None, cfg: Any
) -> Objective:
    """Build objective `name` around `student` (and a frozen `teacher` where it uses one)."""
    build = OBJECTIVES.get(name)
    needs = getattr(build, "teacher_kind", None)  # a FrozenTeacherObjective's kind of teacher
    if needs is not None and not isinstance(teacher, needs):
        raise ConfigError(f"objective {name!r} needs a pretrained teacher checkpoint")
    return build(student, teacher, cfg)


# Registration happens on import; these imports must come after OBJECTIVES exists.
from pipeline.objectives import dist, dkd, dml, features, kd, sokd, vanilla  # noqa: E402, F401
