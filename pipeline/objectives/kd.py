"""Logit knowledge distillation from a frozen teacher."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from pipeline.core.config import positive_temperature, weights_non_negative
from pipeline.objectives import OBJECTIVES
from pipeline.objectives.base import FrozenTeacherObjective, StepOutput, logit_view
from pipeline.objectives.losses import cross_entropy, kd_kl


@dataclass(frozen=True)
class KdConfig:
    temperature: float = 4.0  # τ of the softened predictions
    ce_weight: float = 0.1  # RepDistiller's CIFAR-100 weights
    kd_weight: float = 0.9  # τ²·KL to the frozen teacher
    # z-score both logit vectors before τ (Sun et al., CVPR 2024); their CIFAR-100 setting with
    # it is τ = 2, kd_weight = 9 (ce_weight 0.1 as here)
    logit_standardisation: bool = False  # z-score both logit vectors before τ

    def __post_init__(self) -> None:
        positive_temperature(self)
        weights_non_negative(self, "ce_weight", "kd_weight")


@OBJECTIVES.register("kd")
class KnowledgeDistillation(FrozenTeacherObjective):
    """Distilling the Knowledge in a Neural Network (Hinton, Vinyals & Dean, 2015).

    Student loss: ce_weight·CE(z_S, y) + kd_weight·τ²·KL(p^τ(z_T) ‖ p^τ(z_S)), with the teacher
    frozen in eval mode. RepDistiller's CIFAR-100 weights are ce 0.1, kd 0.9 at τ = 4.
    """

    config = KdConfig
    cfg: KdConfig

    def step(self, images: Tensor, labels: Tensor, progress: float) -> StepOutput:
        teacher_logits = self.teacher_logits(images)  # (B, K)
        student_logits = self.student(images)  # (B, K)
        z_s, z_t = logit_view(
            student_logits, teacher_logits, standardise_them=self.cfg.logit_standardisation
        )
        parts = {
            "student/ce": self.cfg.ce_weight * cross_entropy(student_logits, labels),
            "student/kd": self.cfg.kd_weight * kd_kl(z_s, z_t, self.cfg.temperature),
        }
        return StepOutput(
            loss=parts["student/ce"] + parts["student/kd"], logits=student_logits, parts=parts
        )
