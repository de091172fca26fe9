"""SOKD with FitNet hints between the last-stage feature maps."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from pipeline.core.config import weights_non_negative
from pipeline.models.staged import tap_channels
from pipeline.objectives import OBJECTIVES
from pipeline.objectives.losses import hint_regression
from pipeline.objectives.sokd import SemiOnlineKD, SokdConfig


@dataclass(frozen=True)
class SokdFitnetConfig(SokdConfig):
    hint_weight: float = 100.0  # β of the FitNet hint loss (CIFAR KD zoo: 100)

    def __post_init__(self) -> None:
        super().__post_init__()
        weights_non_negative(self, "hint_weight")


@OBJECTIVES.register("sokd_fitnet")
class SokdFitNet(SemiOnlineKD):
    """SOKD + FitNet hints (Liu et al., BMVC 2021; FitNets: Romero et al., ICLR 2015).

    Added terms: hint_weight·MSE(regressor(student), sg bridge) for the student, through a trainable
    1x1 conv + BN regressor (trained with the student, never deployed), and hint_weight·MSE(bridge,
    teacher) for the bridge, on the last-stage feature maps.
    """

    config = SokdFitnetConfig
    uses_features = True
    cfg: SokdFitnetConfig

    def __init__(
        self, student: nn.Module, teacher: nn.Module | None, cfg: SokdFitnetConfig
    ) -> None:
        super().__init__(student, teacher, cfg)
        c_in = tap_channels(student, student.split_point)
        c_out = tap_channels(self.teacher_head, self.head_tap)
        self.regressor = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))

    def feature_parts(self, student: Tensor, bridge: Tensor, teacher: Tensor) -> dict[str, Tensor]:
        w = self.cfg.hint_weight
        return {
            "student/hint_bridge": w * hint_regression(self.regressor(student), bridge.detach()),
            "bridge/hint_teacher": w * hint_regression(bridge, teacher),
        }
