"""Deep Mutual Learning: two peers trained together from scratch."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pipeline.core.config import positive_temperature, weights_non_negative
from pipeline.core.errors import ConfigError
from pipeline.models.staged import fresh_copy
from pipeline.objectives import OBJECTIVES
from pipeline.objectives.base import ExtraNetwork, Objective, StepOutput
from pipeline.objectives.losses import cross_entropy, kd_kl


@dataclass(frozen=True)
class DmlConfig:
    temperature: float = 1.0  # 1 in the DML paper
    ce_weight: float = 1.0  # cross-entropy on the labels, each network
    kl_weight: float = 1.0  # KL to the other network's predictions

    def __post_init__(self) -> None:
        positive_temperature(self)
        weights_non_negative(self, "ce_weight", "kl_weight")


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
