"""FitNet hints from a frozen teacher (single stage)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from pipeline.core.config import weights_non_negative
from pipeline.models.staged import tap_channels
from pipeline.objectives import OBJECTIVES
from pipeline.objectives.features import FeatureKD
from pipeline.objectives.losses import hint_regression


@dataclass(frozen=True)
class FitnetConfig:
    ce_weight: float = 1.0  # cross-entropy on the labels
    hint_weight: float = 100.0  # β of the hint loss (CIFAR KD zoo: 100)

    def __post_init__(self) -> None:
        weights_non_negative(self, "ce_weight", "hint_weight")


@OBJECTIVES.register("fitnet")
class FitNet(FeatureKD):
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
