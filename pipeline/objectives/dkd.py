"""Decoupled knowledge distillation from a frozen teacher."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from pipeline.core.config import positive_temperature, weights_non_negative
from pipeline.core.errors import ConfigError
from pipeline.objectives import OBJECTIVES
from pipeline.objectives.base import (
    FrozenTeacherObjective,
    StepOutput,
    linear_warmup,
    logit_view,
)
from pipeline.objectives.losses import cross_entropy, decoupled_kd


@dataclass(frozen=True)
class DkdConfig:
    """The paper's CIFAR-100 defaults (mdistiller): β is per pair, 2 to 8 (see the presets)."""

    ce_weight: float = 1.0  # cross-entropy on the labels
    alpha: float = 1.0  # weight of TCKD (target vs the rest)
    beta: float = 8.0  # weight of NCKD (among the non-target classes)
    temperature: float = 4.0  # τ of both decoupled terms
    # The distillation terms ramp up linearly over this many epochs (fractions allowed): 20 of
    # the paper's 240. Short runs should scale it (e.g. 1/12 of the run).
    warmup_epochs: float = 20.0  # epochs over which TCKD and NCKD ramp up from 0
    logit_standardisation: bool = False  # z-score both logits before τ (Sun et al., CVPR 2024)

    def __post_init__(self) -> None:
        positive_temperature(self)
        weights_non_negative(self, "ce_weight", "alpha", "beta")
        if self.warmup_epochs < 0:
            raise ConfigError(f"warmup_epochs: must be >= 0, got {self.warmup_epochs}")


@OBJECTIVES.register("dkd")
class DecoupledKD(FrozenTeacherObjective):
    """Decoupled Knowledge Distillation (Zhao, Cui, Song, Qiu & Liang, CVPR 2022).

    Student loss: ce_weight·CE + w(t)·(alpha·TCKD + beta·NCKD), where classic KD would tie NCKD's
    weight to the teacher's confidence in the label, and w(t) = min(epochs done / warmup, 1).
    """

    config = DkdConfig
    cfg: DkdConfig

    def step(self, images: Tensor, labels: Tensor, progress: float) -> StepOutput:
        c = self.cfg
        teacher_logits = self.teacher_logits(images)  # (B, K)
        student_logits = self.student(images)  # (B, K)
        z_s, z_t = logit_view(
            student_logits, teacher_logits, standardise_them=c.logit_standardisation
        )
        tckd, nckd = decoupled_kd(z_s, z_t, labels, c.temperature)
        ramp = linear_warmup(progress, self.epochs, c.warmup_epochs)
        parts = {
            "student/ce": c.ce_weight * cross_entropy(student_logits, labels),
            "student/tckd": ramp * c.alpha * tckd,
            "student/nckd": ramp * c.beta * nckd,
        }
        loss = parts["student/ce"] + parts["student/tckd"] + parts["student/nckd"]
        return StepOutput(loss=loss, logits=student_logits, parts=parts)
