"""Attention transfer from a frozen teacher (single stage)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from pipeline.core.config import weights_non_negative
from pipeline.objectives import OBJECTIVES
from pipeline.objectives.features import FeatureKD
from pipeline.objectives.losses import attention_transfer


@dataclass(frozen=True)
class AtConfig:
    ce_weight: float = 1.0  # cross-entropy on the labels
    at_weight: float = 1000.0  # β of attention transfer (CIFAR KD zoo: 1000)

    def __post_init__(self) -> None:
        weights_non_negative(self, "ce_weight", "at_weight")


@OBJECTIVES.register("at")
class AttentionTransfer(FeatureKD):
    """Paying More Attention to Attention (Zagoruyko & Komodakis, ICLR 2017).

    Loss: ce_weight·CE + at_weight·AT(student, teacher) on the last-stage feature maps.
    """

    config = AtConfig

    def feature_parts(self, student: Tensor, teacher: Tensor) -> dict[str, Tensor]:
        return {"student/at": self.cfg.at_weight * attention_transfer(student, teacher)}
