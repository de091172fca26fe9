"""Wide ResNets (Zagoruyko & Komodakis, BMVC 2016), pre-activation, depth 6n+4, width k: WRN-d-k."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.models import MODELS
from pipeline.models.staged import StagedClassifier


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 with an identity or 1x1-conv shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = (
            None if c_in == c_out and stride == 1 else nn.Conv2d(c_in, c_out, 1, stride, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        act = F.relu(self.bn1(x))
        # With a projection shortcut both paths share the pre-activation (as the original WRN code).
        residual = x if self.shortcut is None else self.shortcut(act)
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        return out + residual


def _group(c_in: int, c_out: int, n: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        *[PreActBlock(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1) for i in range(n)]
    )


def wide_resnet(depth: int, width: int, num_classes: int, in_channels: int) -> StagedClassifier:
    """WRN-depth-width; the default split puts the last group and final BN-ReLU in the head."""
    if (depth - 4) % 6:
        raise ValueError(f"WRN depth must be 6n+4, got {depth}")
    n = (depth - 4) // 6
    c = [16, 16 * width, 32 * width, 64 * width]
    return StagedClassifier(
        OrderedDict(
            [
                ("stem", nn.Conv2d(in_channels, c[0], 3, 1, 1, bias=False)),
                ("stage1", _group(c[0], c[1], n, 1)),
                ("stage2", _group(c[1], c[2], n, 2)),
                ("stage3", _group(c[2], c[3], n, 2)),
                ("norm", nn.BatchNorm2d(c[3])),
                ("act", nn.ReLU()),
                ("pool", nn.AdaptiveAvgPool2d(1)),
                ("flatten", nn.Flatten()),
                ("fc", nn.Linear(c[3], num_classes)),
            ]
        ),
        split_point="stage3",
    )


def _factory(depth: int, width: int) -> Callable[[int, int], StagedClassifier]:
    def build(num_classes: int, in_channels: int) -> StagedClassifier:
        return wide_resnet(depth, width, num_classes, in_channels)

    build.__doc__ = f"WRN-{depth}-{width}."
    return build


MODELS.register("wrn_10_1")(_factory(10, 1))
MODELS.register("wrn_16_1")(_factory(16, 1))
MODELS.register("wrn_16_2")(_factory(16, 2))
MODELS.register("wrn_16_4")(_factory(16, 4))
MODELS.register("wrn_28_10")(_factory(28, 10))
MODELS.register("wrn_40_1")(_factory(40, 1))
MODELS.register("wrn_40_2")(_factory(40, 2))
