"""Semi-Online Knowledge Distillation (Liu, Liu & Huang, BMVC 2021, arXiv 2111.11747).

A frozen, pretrained teacher is cut into trunk and head. A trainable knowledge bridge, a copy of the
head, reads the teacher's trunk features and learns online from the labels, the frozen teacher (KD)
and the student (DML); the student learns from the labels and from the bridge only. Trunk +
bridge is afterwards an "improved teacher" with the teacher's architecture.

The feature-based variants (`sokd_at.py`, `sokd_fitnet.py`) add one feature term per network to
the logit terms through `feature_parts`: the student imitates the bridge's stage output, and the
bridge stays anchored to the teacher's.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from pipeline.core.config import positive_temperature, weights_non_negative
from pipeline.core.errors import ConfigError
from pipeline.models.staged import (
    StagedClassifier,
    copy_head,
    forward_with_tap,
    split,
)
from pipeline.objectives import OBJECTIVES
from pipeline.objectives.base import (
    ExtraNetwork,
    FrozenTeacherObjective,
    StepOutput,
    linear_warmup,
    logit_view,
)
from pipeline.objectives.losses import cross_entropy, kd_kl


@dataclass(frozen=True)
class SokdConfig:
    temperature: float = 4.0  # τ of the three KL terms
    student_ce: float = 1.0  # λ1: the student's cross-entropy on the labels
    student_kl_bridge: float = 1.0  # λ2: the student's τ²·KL to the bridge
    bridge_ce: float = 1.0  # α1: the bridge's cross-entropy on the labels
    bridge_kl_teacher: float = 1.0  # α2: the bridge's τ²·KL to the frozen teacher
    bridge_kl_student: float = 1.0  # α3: the bridge's τ²·KL to the student
    # teacher: a copy of the teacher's head | random: as the reference code
    bridge_init: Literal["random", "teacher"] = "teacher"  # teacher | random (reference code)
    # eval: frozen BatchNorm statistics | train: batch statistics, as the reference code
    teacher_bn: Literal["eval", "train"] = "eval"  # eval | train (reference code)
    # bridge lr = bridge_lr_mult x train.optim.lr (reference: 1.0 in its config, 0.5 in its code)
    bridge_lr_mult: float = 1.0  # the bridge's lr as a multiple of train.optim.lr
    split: str = ""  # the teacher's first head module; "" picks the architecture's default
    # z-score every logit vector before τ in the three KL terms (Sun et al., CVPR 2024)
    logit_standardisation: bool = False  # z-score every logit vector before τ
    # The two terms that learn from a network still in training (the student's KL to the bridge,
    # the bridge's KL to the student) ramp up linearly from 0 over this many epochs (fractions
    # allowed), as DKD warms up its loss; 0: full weight from the first step (the paper, the
    # CIFAR-100 presets). One epoch keeps the untrained student from dragging the bridge away
    # from the teacher in the first steps and the student from training at twice vanilla's
    # effective rate while it is least stable: +0.99 points [+0.32, +1.65] on the comparison
    # budget, 5 seeds of 5, and a quarter of the spread over seeds on timm's MobileNetV3
    # (docs/method.md, benchmarks/short_runs.json).
    warmup_epochs: float = 1.0  # epochs over which the two online KL terms ramp up from 0

    def __post_init__(self) -> None:
        positive_temperature(self)
        if self.bridge_lr_mult <= 0:
            raise ConfigError(f"bridge_lr_mult: must be > 0, got {self.bridge_lr_mult}")
        if self.warmup_epochs < 0:
            raise ConfigError(f"warmup_epochs: must be >= 0, got {self.warmup_epochs}")
        weights_non_negative(
            self,
            "student_ce",
            "student_kl_bridge",
            "bridge_ce",
            "bridge_kl_teacher",
            "bridge_kl_student",
        )


@OBJECTIVES.register("sokd")
class SemiOnlineKD(FrozenTeacherObjective):
    """Semi-Online Knowledge Distillation (Liu et al., BMVC 2021)."""

    config: type = SokdConfig
    cfg: SokdConfig
    teacher_kind = StagedClassifier  # cut into trunk and head

    uses_features = False  # the feature variants also read the last stage of each network

    def __init__(self, student: nn.Module, teacher: StagedClassifier, cfg: SokdConfig) -> None:
        super().__init__(student, teacher, cfg)
        # Trunk and head are views sharing the teacher's modules; the bridge is a trainable copy.
        try:
            self.teacher_trunk, self.teacher_head = split(teacher, cfg.split)
        except ConfigError as err:  # build_objective puts the section in front
            raise ConfigError(f"split: {err}") from None
        self.head_tap = next(iter(self.teacher_head.named_children()))[0]  # e.g. "stage3"
        self.bridge = copy_head(self.teacher_head, reinitialise=cfg.bridge_init == "random")
        # teacher_bn=train reproduces the reference code: frozen weights, but BatchNorm on batch
        # statistics with running statistics that drift during distillation.
        self.frozen = ("teacher",) if cfg.teacher_bn == "eval" else ()

    def _run(self, net: nn.Module, tap: str, x: Tensor) -> tuple[Tensor | None, Tensor]:
        return forward_with_tap(net, tap, x) if self.uses_features else (None, net(x))

    def step(self, images: Tensor, labels: Tensor, progress: float) -> StepOutput:
        c = self.cfg
        # The frozen teacher runs once: its trunk output feeds both its own head and the bridge.
        with torch.inference_mode():
            features = self.teacher_trunk(images)  # (B, C, H', W')
            teacher_feat, teacher_logits = self._run(self.teacher_head, self.head_tap, features)
        # clone(): tensors made under inference_mode may not be saved for a backward pass.
        features, teacher_logits = features.clone(), teacher_logits.clone()
        bridge_feat, bridge_logits = self._run(self.bridge, self.head_tap, features)  # (B, K)
        student_feat, student_logits = self._run(self.student, self.student.split_point, images)
        z_s, z_b, z_t = logit_view(
            student_logits, bridge_logits, teacher_logits, standardise_them=c.logit_standardisation
        )
        # Every cross term is detached: each network treats its peer's output as a fixed target
        # this step, so one backward of the sum optimises each network on its own loss.
        ramp = linear_warmup(progress, self.epochs, c.warmup_epochs)  # the online KL terms
        parts = {
            "student/ce": c.student_ce * cross_entropy(student_logits, labels),
            "student/kl_bridge": ramp
            * c.student_kl_bridge
            * kd_kl(z_s, z_b.detach(), c.temperature),
            "bridge/ce": c.bridge_ce * cross_entropy(bridge_logits, labels),
            "bridge/kl_teacher": c.bridge_kl_teacher * kd_kl(z_b, z_t, c.temperature),
            "bridge/kl_student": ramp
            * c.bridge_kl_student
            * kd_kl(z_b, z_s.detach(), c.temperature),
        }
        if self.uses_features:
            parts.update(self.feature_parts(student_feat, bridge_feat, teacher_feat.clone()))
        loss = torch.stack(list(parts.values())).sum()
        return StepOutput(loss=loss, logits=student_logits, parts=parts)

    def feature_parts(self, student: Tensor, bridge: Tensor, teacher: Tensor) -> dict[str, Tensor]:
        """Feature terms of the variants: student -> bridge, bridge -> teacher (last-stage maps)."""
        return {}

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        bridge = list(self.bridge.parameters())
        ids = {id(p) for p in bridge}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        return [
            {"params": rest, "lr": lr, "name": "student"},  # the student and its own adapters
            {"params": bridge, "lr": lr * self.cfg.bridge_lr_mult, "name": "bridge"},
        ]

    def extra_networks(self) -> dict[str, ExtraNetwork]:
        # Trunk + bridge carry the teacher's module names: their weights load into its arch.
        trunk_and_bridge = [*self.teacher_trunk.named_children(), *self.bridge.named_children()]
        improved = nn.Sequential(OrderedDict(trunk_and_bridge))
        return {"improved_teacher": ExtraNetwork(improved, "teacher")}
