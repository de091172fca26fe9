"""Plain supervised training: teacher pretraining and the no-distillation student baseline."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from pipeline.objectives import OBJECTIVES
from pipeline.objectives.base import Objective, StepOutput
from pipeline.objectives.losses import cross_entropy


@dataclass(frozen=True)
class VanillaConfig:
    """Cross-entropy only: no knobs beyond the shared training schedule."""


@OBJECTIVES.register("vanilla")
class Vanilla(Objective):
    """Cross-entropy on the labels only (the baseline every KD paper reports)."""

    config = VanillaConfig

    def __init__(self, student: nn.Module, teacher: nn.Module | None, cfg: VanillaConfig) -> None:
        super().__init__()
        self.student = student  # a teacher, if given, is ignored: the baseline never sees it

    def step(self, images: Tensor, labels: Tensor, progress: float) -> StepOutput:
        logits = self.student(images)  # (B, K)
        parts = {"student/ce": cross_entropy(logits, labels)}
        return StepOutput(loss=parts["student/ce"], logits=logits, parts=parts)

    def deployable(self) -> nn.Module:
        return self.student
