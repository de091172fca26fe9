"""Offline KD from a frozen teacher combined with online DML between two student peers."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pipeline.core.config import positive_temperature, weights_non_negative
from pipeline.models.staged import fresh_copy
from pipeline.objectives import OBJECTIVES
from pipeline.objectives.base import ExtraNetwork, FrozenTeacherObjective, StepOutput
from pipeline.objectives.losses import cross_entropy, kd_kl


@dataclass(frozen=True)
class KdDmlConfig:
    temperature: float = 4.0  # of the KD term; the mutual term runs at 1 as in DML
    ce_weight: float = 1.0  # cross-entropy on the labels, each network
    kd_weight: float = 1.0  # the student's KD term from the frozen teacher
    dml_weight: float = 1.0  # the mutual KL between student and peer

    def __post_init__(self) -> None:
        positive_temperature(self)
        weights_non_negative(self, "ce_weight", "kd_weight", "dml_weight")


@OBJECTIVES.register("kd_dml")
class KdWithMutualLearning(FrozenTeacherObjective):
    """Offline KD + online DML, unified (the comparison of Liu et al., BMVC 2021; form chosen here).

    The paper does not state its form. Here two peers of the student's architecture (the student
    and a from-scratch copy) each learn from the labels, the frozen teacher and each other:
        L = ce_weight·CE + kd_weight·τ²·KL(p^τ(z_T) ‖ p^τ(z)) + dml_weight·KL(p(sg z_other) ‖ p(z)),
    the KD term at temperature τ, the mutual term at τ = 1 as in DML. It isolates what SOKD's bridge
    adds: an online peer that, unlike the bridge, does not read the teacher's features.
    """

    config = KdDmlConfig
    cfg: KdDmlConfig

    def __init__(self, student: nn.Module, teacher: nn.Module, cfg: KdDmlConfig) -> None:
        super().__init__(student, teacher, cfg)
        self.peer = fresh_copy(student)

    def _loss(
        self, logits: Tensor, other: Tensor, teacher: Tensor, labels: Tensor, who: str, peer: str
    ) -> dict[str, Tensor]:
        c = self.cfg
        return {
            f"{who}/ce": c.ce_weight * cross_entropy(logits, labels),
            f"{who}/kd_teacher": c.kd_weight * kd_kl(logits, teacher, c.temperature),
            f"{who}/kl_{peer}": c.dml_weight * kd_kl(logits, other.detach(), 1.0),
        }

    def step(self, images: Tensor, labels: Tensor, progress: float) -> StepOutput:
        teacher_logits = self.teacher_logits(images)  # (B, K)
        student_logits, peer_logits = self.student(images), self.peer(images)  # (B, K) each
        parts = {
            **self._loss(student_logits, peer_logits, teacher_logits, labels, "student", "peer"),
            **self._loss(peer_logits, student_logits, teacher_logits, labels, "peer", "student"),
        }
        return StepOutput(torch.stack(list(parts.values())).sum(), student_logits, parts)

    def extra_networks(self) -> dict[str, ExtraNetwork]:
        return {"peer": ExtraNetwork(self.peer, "student")}
