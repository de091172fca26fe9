"""Semi-Online Knowledge Distillation (Liu, Liu & Huang, BMVC 2021, arXiv 2111.11747).

A frozen, pretrained teacher is cut into trunk and head. A trainable knowledge bridge, a copy of the
head, reads the teacher's trunk features and learns online from the labels, the frozen teacher (KD)
and the student (DML); the student learns from the labels and from the bridge only. Trunk +
bridge is afterwards an "improved teacher" with the teacher's architecture.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor, nn

from pipeline.config import SokdConfig
from pipeline.errors import ConfigError
from pipeline.losses import cross_entropy, kd_kl
from pipeline.models.staged import StagedClassifier, copy_head, split
from pipeline.objectives import OBJECTIVES
from pipeline.objectives.base import Objective, StepOutput, freeze


@OBJECTIVES.register("sokd")
class SemiOnlineKD(Objective):
    """Semi-Online Knowledge Distillation (Liu et al., BMVC 2021)."""

    def __init__(self, student: nn.Module, teacher: nn.Module | None, cfg: SokdConfig) -> None:
        super().__init__()
        if not isinstance(teacher, StagedClassifier):
            raise ConfigError("objective 'sokd' needs a pretrained teacher checkpoint")
        self.cfg = cfg
        self.student = student
        self.teacher = freeze(teacher)
        trunk, head = split(teacher, cfg.split)
        self.teacher_trunk, self.teacher_head = (
            trunk,
            head,
        )  # views that share the teacher's modules
        self.bridge = copy_head(head, reinitialise=cfg.bridge_init == "random")
        # teacher_bn=train reproduces the reference code: frozen weights, but BatchNorm on batch
        # statistics with running statistics that drift during distillation.
        self.frozen = ("teacher",) if cfg.teacher_bn == "eval" else ()

    def step(self, images: Tensor, labels: Tensor, progress: float) -> StepOutput:
        c = self.cfg
        # The frozen teacher runs once: its trunk output feeds both its own head and the bridge.
        with torch.inference_mode():
            features = self.teacher_trunk(images)  # (B, C, H', W')
            teacher_logits = self.teacher_head(features)  # (B, K)
        # clone(): tensors made under inference_mode may not be saved for the bridge's backward.
        features, teacher_logits = features.clone(), teacher_logits.clone()
        bridge_logits = self.bridge(features)  # (B, K); trained online, unlike the frozen trunk
        student_logits = self.student(images)  # (B, K)
        # Every cross term is detached: each network treats its peer's output as a fixed target this
        # step, so one backward of the sum optimises each network on its own loss.
        parts = {
            "student/ce": c.student_ce * cross_entropy(student_logits, labels),
            "student/kl_bridge": c.student_kl_bridge
            * kd_kl(student_logits, bridge_logits.detach(), c.temperature),
            "bridge/ce": c.bridge_ce * cross_entropy(bridge_logits, labels),
            "bridge/kl_teacher": c.bridge_kl_teacher
            * kd_kl(bridge_logits, teacher_logits, c.temperature),
            "bridge/kl_student": c.bridge_kl_student
            * kd_kl(bridge_logits, student_logits.detach(), c.temperature),
        }
        loss = torch.stack(list(parts.values())).sum()
        return StepOutput(loss=loss, logits=student_logits, parts=parts)

    def deployable(self) -> nn.Module:
        return self.student

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        return [
            {
                "params": [p for p in self.student.parameters() if p.requires_grad],
                "lr": lr,
                "name": "student",
            },
            {
                "params": list(self.bridge.parameters()),
                "lr": lr * self.cfg.bridge_lr_mult,
                "name": "bridge",
            },
        ]

    def extra_networks(self) -> dict[str, nn.Module]:
        # Trunk + bridge carry the teacher's module names: their weights load into its arch.
        improved = OrderedDict(
            [*self.teacher_trunk.named_children(), *self.bridge.named_children()]
        )
        return {"improved_teacher": nn.Sequential(improved)}
