"""Distillation from a stronger teacher by relations (DIST), from a frozen teacher."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from pipeline.core.config import positive_temperature, weights_non_negative
from pipeline.objectives import OBJECTIVES
from pipeline.objectives.base import FrozenTeacherObjective, StepOutput
from pipeline.objectives.losses import cross_entropy, dist_relations


@dataclass(frozen=True)
class DistConfig:
    """The paper's CIFAR-100 setting (β = γ = 2, τ = 4); on ImageNet it uses 1, 1, 1."""

    ce_weight: float = 1.0  # cross-entropy on the labels
    beta: float = 2.0  # inter-class relation (each image's class distribution)
    gamma: float = 2.0  # intra-class relation (each class across the batch)
    temperature: float = 4.0  # τ of the softened predictions

    def __post_init__(self) -> None:
        positive_temperature(self)
        weights_non_negative(self, "ce_weight", "beta", "gamma")


@OBJECTIVES.register("dist")
class RelationDistillation(FrozenTeacherObjective):
    """Knowledge Distillation from A Stronger Teacher (Huang, You, Wang, Qian & Xu, NeurIPS 2022).

    Student loss: ce_weight·CE + beta·τ²·(1 − ρ_inter) + gamma·τ²·(1 − ρ_intra), with ρ the mean
    Pearson correlation of the softened predictions of student and frozen teacher, per image
    (inter-class) and per class over the batch (intra-class).
    """

    config = DistConfig
    cfg: DistConfig

    def step(self, images: Tensor, labels: Tensor, progress: float) -> StepOutput:
        c = self.cfg
        teacher_logits = self.teacher_logits(images)  # (B, K)
        student_logits = self.student(images)  # (B, K)
        inter, intra = dist_relations(student_logits, teacher_logits, c.temperature)
        parts = {
            "student/ce": c.ce_weight * cross_entropy(student_logits, labels),
            "student/inter": c.beta * inter,
            "student/intra": c.gamma * intra,
        }
        loss = parts["student/ce"] + parts["student/inter"] + parts["student/intra"]
        return StepOutput(loss=loss, logits=student_logits, parts=parts)
