"""MobileNetV2 (Sandler et al., CVPR 2018) in the CIFAR KD zoo's form: stride-1 stem, width 0.5.

Inverted residual blocks: 1x1 expansion (factor t), 3x3 depthwise, linear 1x1 projection, with a
residual connection when the shape allows. The CIFAR form keeps the stem and the second group at
stride 1 so that 32x32 inputs end at 4x4 instead of 1x1.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from pipeline.models import MODELS
from pipeline.models.staged import StagedClassifier, conv_bn

# (expansion t, output channels c, repeats n, first stride s) per group, as in the paper's Table 2,
# with the second group's stride 2 -> 1 for small images.
GROUPS = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _conv_bn6(
    c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True
) -> list[nn.Module]:
    return conv_bn(c_in, c_out, kernel, stride, groups, nn.ReLU6 if act else None)


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = c_in * expansion
        layers = _conv_bn6(c_in, hidden, 1) if expansion != 1 else []
        layers += _conv_bn6(hidden, hidden, 3, stride, groups=hidden)
        layers += _conv_bn6(
            hidden, c_out, 1, act=False
        )  # linear bottleneck: no ReLU after projecting
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x) if self.residual else self.body(x)


def mobilenetv2(width: float, num_classes: int, in_channels: int) -> StagedClassifier:
    """MobileNetV2 at width multiplier `width`; the head starts at the 160-channel group."""
    stem = int(32 * width)
    stages: OrderedDict[str, nn.Module] = OrderedDict(
        stem=nn.Sequential(*_conv_bn6(in_channels, stem, 3))
    )
    c_in = stem
    for g, (t, c, n, s) in enumerate(GROUPS, start=1):
        c_out = int(c * width)
        stages[f"stage{g}"] = nn.Sequential(
            *[
                InvertedResidual(c_in if i == 0 else c_out, c_out, s if i == 0 else 1, t)
                for i in range(n)
            ]
        )
        c_in = c_out
    last = 1280 if width <= 1.0 else int(1280 * width)
    stages["conv_last"] = nn.Sequential(*_conv_bn6(c_in, last, 1))
    stages["pool"] = nn.AdaptiveAvgPool2d(1)
    stages["flatten"] = nn.Flatten()
    stages["fc"] = nn.Linear(last, num_classes)
    return StagedClassifier(stages, split_point="stage6")


@MODELS.register("mobilenetv2_x0_5")
def mobilenetv2_x0_5(num_classes: int, in_channels: int) -> StagedClassifier:
    """MobileNetV2 at width 0.5 (the KD zoo's 'mobile_half')."""
    return mobilenetv2(0.5, num_classes, in_channels)
