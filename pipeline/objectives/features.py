"""Feature distillation from a frozen teacher: the AT and FitNet baselines (single stage).

The student's last-stage feature map imitates the teacher's, next to cross-entropy on the labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pipeline.config import weights_non_negative
from pipeline.losses import attention_transfer, cross_entropy, hint_regression
from pipeline.models.staged import StagedClassifier, forward_with_tap, tap_channels
from pipeline.objectives import OBJECTIVES
from pipeline.objectives.base import FrozenTeacherObjective, StepOutput


@dataclass(frozen=True)
class AtConfig:
    ce_weight: float = 1.0  # cross-entropy on the labels
    at_weight: float = 1000.0  # β of attention transfer (CIFAR KD zoo: 1000)

    def __post_init__(self) -> None:
        weights_non_negative(self, "ce_weight", "at_weight")


@dataclass(frozen=True)
class FitnetConfig:
    ce_weight: float = 1.0  # cross-entropy on the labels
    hint_weight: float = 100.0  # β of the hint loss (CIFAR KD zoo: 100)

    def __post_init__(self) -> None:
        weights_non_negative(self, "ce_weight", "hint_weight")


class _FeatureKD(FrozenTeacherObjective):
    teacher_kind = StagedClassifier  # the student imitates its last stage's output
    cfg: AtConfig | FitnetConfig

    def step(self, images: Tensor, labels: Tensor, progress: float) -> StepOutput:
        with torch.inference_mode():
            teacher_feat, _ = forward_with_tap(self.teacher, self.teacher.split_point, images)
        teacher_feat = teacher_feat.clone()  # an inference tensor may not be saved for backward
        student_feat, logits = forward_with_tap(self.student, self.student.split_point, images)
        parts = {
            "student/ce": self.cfg.ce_weight * cross_entropy(logits, labels),
            **self.feature_parts(student_feat, teacher_feat),
        }
        return StepOutput(loss=torch.stack(list(parts.values())).sum(), logits=logits, parts=parts)

    def feature_parts(self, student: Tensor, teacher: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError


@OBJECTIVES.register("at")
class AttentionTransfer(_FeatureKD):
    """Paying More Attention to Attention (Zagoruyko & Komodakis, ICLR 2017).

    Loss: ce_weight·CE + at_weight·AT(student, teacher) on the last-stage feature maps.
    """

    config = AtConfig

    def feature_parts(self, student: Tensor, teacher: Tensor) -> dict[str, Tensor]:
        return {"student/at": self.cfg.at_weight * attention_transfer(student, teacher)}


@OBJECTIVES.register("fitnet")
class FitNet(_FeatureKD):
    """FitNets: Hints for Thin Deep Nets (Romero et al., ICLR 2015), in one stage.

    Loss: ce_weight·CE + hint_weight·MSE(regressor(student), teacher) on the last-stage maps,
    trained jointly (the CIFAR KD zoo's form) rather than the paper's hint pre-training stage.
    """

    config = FitnetConfig

    def __init__(self, student: nn.Module, teacher: nn.Module | None, cfg: FitnetConfig) -> None:
        super().__init__(student, teacher, cfg)
        c_in = tap_channels(student, student.split_point)
        c_out = tap_channels(self.teacher, self.teacher.split_point)
        self.regressor = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))

    def feature_parts(self, student: Tensor, teacher: Tensor) -> dict[str, Tensor]:
        return {
            "student/hint": self.cfg.hint_weight * hint_regression(self.regressor(student), teacher)
        }
