"""CIFAR ResNets (He et al., CVPR 2016, §4.2): depth 6n+2, three groups of n basic blocks.

Widths follow the KD model zoo (RepDistiller/CRD): resnet8..110 use 16/16/32/64 channels, and the
"x4" variants 32/64/128/256. Projection shortcuts are 1x1 conv + BN.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.models import MODELS
from pipeline.models.staged import StagedClassifier


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus shortcut, then ReLU (post-activation)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def _group(c_in: int, c_out: int, n: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        *[BasicBlock(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1) for i in range(n)]
    )


def cifar_resnet(
    depth: int, widths: tuple[int, int, int, int], num_classes: int, in_channels: int
) -> StagedClassifier:
    """ResNet-depth, widths (stem, group1, group2, group3); the head starts at the last group."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    c = widths
    return StagedClassifier(
        OrderedDict(
            [
                (
                    "stem",
                    nn.Sequential(
                        nn.Conv2d(in_channels, c[0], 3, 1, 1, bias=False),
                        nn.BatchNorm2d(c[0]),
                        nn.ReLU(),
                    ),
                ),
                ("stage1", _group(c[0], c[1], n, 1)),
                ("stage2", _group(c[1], c[2], n, 2)),
                ("stage3", _group(c[2], c[3], n, 2)),
                ("pool", nn.AdaptiveAvgPool2d(1)),
                ("flatten", nn.Flatten()),
                ("fc", nn.Linear(c[3], num_classes)),
            ]
        ),
        split_point="stage3",
    )


def _factory(
    depth: int, widths: tuple[int, int, int, int]
) -> Callable[[int, int], StagedClassifier]:
    def build(num_classes: int, in_channels: int) -> StagedClassifier:
        return cifar_resnet(depth, widths, num_classes, in_channels)

    build.__doc__ = f"CIFAR ResNet-{depth}, widths {widths}."
    return build


_BASE, _X4 = (16, 16, 32, 64), (32, 64, 128, 256)  # stem and stage widths; x4: four times wider
MODELS.register("resnet8")(_factory(8, _BASE))
MODELS.register("resnet14")(_factory(14, _BASE))
MODELS.register("resnet20")(_factory(20, _BASE))
MODELS.register("resnet32")(_factory(32, _BASE))
MODELS.register("resnet44")(_factory(44, _BASE))
MODELS.register("resnet56")(_factory(56, _BASE))
MODELS.register("resnet110")(_factory(110, _BASE))
MODELS.register("resnet8x4")(_factory(8, _X4))
MODELS.register("resnet32x4")(_factory(32, _X4))
