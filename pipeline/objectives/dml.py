"""Online distillation between peers trained together: DML, and DML combined with offline KD."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pipeline.config import positive_temperature, weights_non_negative
from pipeline.errors import ConfigError
from pipeline.losses import cross_entropy, kd_kl
from pipeline.models.staged import init_weights
from pipeline.objectives import OBJECTIVES
from pipeline.objectives.base import ExtraNetwork, FrozenTeacherObjective, Objective, StepOutput


def fresh_copy(network: nn.Module) -> nn.Module:
    """The same architecture, re-initialised and trainable: a peer that starts from scratch."""
    peer = copy.deepcopy(network).requires_grad_(True)
    init_weights(peer)
    return peer


@dataclass(frozen=True)
class DmlConfig:
    temperature: float = 1.0  # 1 in the DML paper
    ce_weight: float = 1.0  # cross-entropy on the labels, each network
    kl_weight: float = 1.0  # KL to the other network's predictions

    def __post_init__(self) -> None:
        positive_temperature(self)
        weights_non_negative(self, "ce_weight", "kl_weight")


@dataclass(frozen=True)
class KdDmlConfig:
    temperature: float = 4.0  # of the KD term; the mutual term runs at 1 as in DML
    ce_weight: float = 1.0  # cross-entropy on the labels, each network
    kd_weight: float = 1.0  # the student's KD term from the frozen teacher
    dml_weight: float = 1.0  # the mutual KL between student and peer

    def __post_init__(self) -> None:
        positive_temperature(self)
        weights_non_negative(self, "ce_weight", "kd_weight", "dml_weight")


@OBJECTIVES.register("dml")
class DeepMutualLearning(Objective):
    """Deep Mutual Learning (Zhang, Xiang, Hospedales & Lu, CVPR 2018), two peers.

    The student and a peer of the teacher's architecture, trained from scratch in the same step,
    each learn ce_weight·CE + kl_weight·τ²·KL(p^τ(sg z_other) ‖ p^τ(z_self)), τ = 1 in the paper.
    The pretrained teacher only lends its architecture; its weights are not used.
    """

    config = DmlConfig

    def __init__(self, student: nn.Module, teacher: nn.Module | None, cfg: DmlConfig) -> None:
        super().__init__()
        if teacher is None:
            raise ConfigError(
                "objective 'dml' needs a teacher checkpoint for the peer's architecture"
            )
        self.cfg = cfg
        self.student = student
        self.peer = fresh_copy(teacher)

    def step(self, images: Tensor, labels: Tensor, progress: float) -> StepOutput:
        c = self.cfg
        student_logits = self.student(images)  # (B, K)
        peer_logits = self.peer(images)  # (B, K)
        parts = {
            "student/ce": c.ce_weight * cross_entropy(student_logits, labels),
            "student/kl_peer": c.kl_weight
            * kd_kl(student_logits, peer_logits.detach(), c.temperature),
            "peer/ce": c.ce_weight * cross_entropy(peer_logits, labels),
            "peer/kl_student": c.kl_weight
            * kd_kl(peer_logits, student_logits.detach(), c.temperature),
        }
        return StepOutput(torch.stack(list(parts.values())).sum(), student_logits, parts)

    def deployable(self) -> nn.Module:
        return self.student

    def extra_networks(self) -> dict[str, ExtraNetwork]:
        return {"peer": ExtraNetwork(self.peer, "teacher")}


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
