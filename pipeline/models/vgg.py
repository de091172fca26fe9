"""VGG with BatchNorm (Simonyan & Zisserman, ICLR 2015) in the CIFAR KD zoo's form (RepDistiller).

Five conv blocks (conv3x3-BN-ReLU each), max-pooling between them, global average pooling and one
linear classifier. VGG-8 has one conv per block, VGG-13 two.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from torch import nn

from pipeline.models import MODELS
from pipeline.models.staged import StagedClassifier

WIDTHS = (64, 128, 256, 512, 512)


def _block(c_in: int, c_out: int, convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [
            nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
        ]
    return nn.Sequential(*layers)


def vgg(convs_per_block: int, num_classes: int, in_channels: int) -> StagedClassifier:
    """VGG with BN and `convs_per_block` convs per block; the head starts at the last block."""
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    c_in = in_channels
    for i, width in enumerate(WIDTHS):
        stages[f"block{i}"] = _block(c_in, width, convs_per_block)
        if i < 3:  # as the CIFAR zoo: blocks 3 and 4 both run at 4x4 for 32x32 inputs
            stages[f"pool{i}"] = nn.MaxPool2d(2, ceil_mode=True)  # ceil: 28 -> 14 -> 7 -> 4
        c_in = width
    stages["pool"] = nn.AdaptiveAvgPool2d(1)
    stages["flatten"] = nn.Flatten()
    stages["fc"] = nn.Linear(WIDTHS[-1], num_classes)
    return StagedClassifier(stages, split_point="block4")


def _factory(convs: int) -> Callable[[int, int], StagedClassifier]:
    def build(num_classes: int, in_channels: int) -> StagedClassifier:
        return vgg(convs, num_classes, in_channels)

    return build


MODELS.register("vgg8")(_factory(1))
MODELS.register("vgg13")(_factory(2))
