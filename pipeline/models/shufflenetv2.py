"""ShuffleNetV2 (Ma et al., ECCV 2018) at 1x width, CIFAR form: 3x3 stride-1 stem, no max-pool.

Each unit splits the channels in two, transforms one half (1x1, 3x3 depthwise, 1x1), concatenates
and shuffles channels so information crosses the halves; a down-sampling unit transforms both.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from pipeline.models import MODELS
from pipeline.models.staged import StagedClassifier, conv_bn


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave the channels of `groups` groups: (B, g*c, H, W) -> (B, c*g, H, W)."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def _conv_bn(
    c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True
) -> list[nn.Module]:
    return conv_bn(c_in, c_out, kernel, stride, groups, nn.ReLU if act else None)


def _branch(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        *_conv_bn(c_in, c_out, 1),
        *_conv_bn(c_out, c_out, 3, stride, c_out, act=False),
        *_conv_bn(c_out, c_out, 1),
    )


class ShuffleUnit(nn.Module):
    """Stride 1: transform half the channels; stride 2: transform both copies, doubling channels."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        half = c_out // 2
        self.stride = stride
        if stride == 1:
            self.right = _branch(half, half, 1)
        else:
            self.left = nn.Sequential(
                *_conv_bn(c_in, c_in, 3, 2, c_in, act=False), *_conv_bn(c_in, half, 1)
            )
            self.right = nn.Sequential(
                *_conv_bn(c_in, half, 1),
                *_conv_bn(half, half, 3, 2, half, act=False),
                *_conv_bn(half, half, 1),
            )

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            left, right = x.chunk(2, dim=1)
            out = torch.cat([left, self.right(right)], dim=1)
        else:
            out = torch.cat([self.left(x), self.right(x)], dim=1)
        return channel_shuffle(out, 2)


def shufflenetv2(
    widths: tuple[int, int, int], repeats: tuple[int, int, int], num_classes: int, in_channels: int
) -> StagedClassifier:
    """ShuffleNetV2 with three stages; the head starts at the last stage."""
    stages: OrderedDict[str, nn.Module] = OrderedDict(
        stem=nn.Sequential(*_conv_bn(in_channels, 24, 3))
    )
    c_in = 24
    for i, (c_out, n) in enumerate(zip(widths, repeats, strict=True), start=1):
        stages[f"stage{i}"] = nn.Sequential(
            ShuffleUnit(c_in, c_out, 2), *[ShuffleUnit(c_out, c_out, 1) for _ in range(n)]
        )
        c_in = c_out
    stages["conv_last"] = nn.Sequential(*_conv_bn(c_in, 1024, 1))
    stages["pool"] = nn.AdaptiveAvgPool2d(1)
    stages["flatten"] = nn.Flatten()
    stages["fc"] = nn.Linear(1024, num_classes)
    return StagedClassifier(stages, split_point="stage3")


@MODELS.register("shufflenetv2")
def shufflenetv2_x1(num_classes: int, in_channels: int) -> StagedClassifier:
    """ShuffleNetV2 1x (116/232/464 channels; 3, 7, 3 units after each down-sampling unit)."""
    return shufflenetv2((116, 232, 464), (3, 7, 3), num_classes, in_channels)
