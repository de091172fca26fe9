"""SOKD with attention transfer between the last-stage feature maps."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from pipeline.core.config import weights_non_negative
from pipeline.objectives import OBJECTIVES
from pipeline.objectives.losses import attention_transfer
from pipeline.objectives.sokd import SemiOnlineKD, SokdConfig


@dataclass(frozen=True)
class SokdAtConfig(SokdConfig):
    at_weight: float = 1000.0  # β of attention transfer (CIFAR KD zoo: 1000)

    def __post_init__(self) -> None:
        super().__post_init__()
        weights_non_negative(self, "at_weight")


@OBJECTIVES.register("sokd_at")
class SokdAttention(SemiOnlineKD):
    """SOKD + attention transfer (Liu et al., BMVC 2021; AT: Zagoruyko & Komodakis, ICLR 2017).

    Added terms: at_weight·AT(student, sg bridge) for the student and at_weight·AT(bridge, teacher)
    for the bridge, on the last-stage feature maps. Attention maps are channel-free: no adapter.
    """

    config = SokdAtConfig
    uses_features = True
    cfg: SokdAtConfig

    def feature_parts(self, student: Tensor, bridge: Tensor, teacher: Tensor) -> dict[str, Tensor]:
        w = self.cfg.at_weight
        return {
            "student/at_bridge": w * attention_transfer(student, bridge.detach()),
            "bridge/at_teacher": w * attention_transfer(bridge, teacher),
        }
