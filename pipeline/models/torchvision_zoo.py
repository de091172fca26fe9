"""torchvision classifiers as chains of named stages, so they can be teacher, student or bridge.

The modules are torchvision's own (same weights layout); they are only regrouped into the
`StagedClassifier` contract, with the bridge split before the last stage (before `layer4` for
ResNets). Inputs with other than 3 channels get a first convolution of the right width.
`torchvision_key_map` translates a torchvision state_dict (e.g. a fine-tuned teacher saved with
`torch.save(model.state_dict())`) to these names.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING

from torch import nn

from pipeline.models import MODELS
from pipeline.models.staged import StagedClassifier

if TYPE_CHECKING:
    import torchvision


def _tv() -> ModuleType:
    """torchvision.models, imported on first use: importing torchvision costs ~1.4 s (it pulls in
    torch._dynamo), which every stage would otherwise pay for models it does not build."""
    import torchvision.models

    return torchvision.models


def _first_conv_for(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    if in_channels == conv.in_channels:
        return conv
    return nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        bias=conv.bias is not None,
    )


def _staged(stages: OrderedDict[str, nn.Module], split_point: str) -> StagedClassifier:
    return StagedClassifier(stages, split_point, initialise=False)


def _resnet(tv: torchvision.models.ResNet, in_channels: int) -> StagedClassifier:
    tv.conv1 = _first_conv_for(tv.conv1, in_channels)
    return _staged(
        OrderedDict(
            [
                ("stem", nn.Sequential(tv.conv1, tv.bn1, tv.relu, tv.maxpool)),
                ("layer1", tv.layer1),
                ("layer2", tv.layer2),
                ("layer3", tv.layer3),
                ("layer4", tv.layer4),
                ("pool", tv.avgpool),
                ("flatten", nn.Flatten()),
                ("fc", tv.fc),
            ]
        ),
        split_point="layer4",
    )


def _mobilenet(
    features: nn.Sequential,
    groups: list[tuple[str, slice]],
    classifier: nn.Module,
    in_channels: int,
    split_point: str,
) -> StagedClassifier:
    features[0][0] = _first_conv_for(features[0][0], in_channels)
    stages: OrderedDict[str, nn.Module] = OrderedDict(
        (name, nn.Sequential(*features[part])) for name, part in groups
    )
    stages.update(pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), classifier=classifier)
    return _staged(stages, split_point)


# Inverted-residual groups by output width, from torchvision's `features` indices.
V2_GROUPS = [
    ("stem", slice(0, 1)),
    ("stage1", slice(1, 2)),
    ("stage2", slice(2, 4)),
    ("stage3", slice(4, 7)),
    ("stage4", slice(7, 11)),
    ("stage5", slice(11, 14)),
    ("stage6", slice(14, 17)),
    ("stage7", slice(17, 18)),
    ("conv_last", slice(18, 19)),
]
V3_SMALL_GROUPS = [
    ("stem", slice(0, 1)),
    ("stage1", slice(1, 2)),
    ("stage2", slice(2, 4)),
    ("stage3", slice(4, 7)),
    ("stage4", slice(7, 9)),
    ("stage5", slice(9, 12)),
    ("conv_last", slice(12, 13)),
]


def tv_resnet(depth: int) -> Callable[[int, int], StagedClassifier]:
    def factory(num_classes: int, in_channels: int) -> StagedClassifier:
        build = getattr(_tv(), f"resnet{depth}")
        # Each residual block starts as the identity (its last BatchNorm's scale at 0, Goyal et
        # al. 2017; timm's default): trained from scratch at lr 0.1 without warm-up, torchvision's
        # own init reached 46 % where this reaches ~70 % (32-pixel photos, 3 epochs). Pretrained
        # weights overwrite it.
        tv = build(weights=None, num_classes=num_classes, zero_init_residual=True)
        return _resnet(tv, in_channels)

    factory.__doc__ = f"torchvision ResNet-{depth}, split before layer4."
    return factory


MODELS.register("tv_resnet18")(tv_resnet(18))
MODELS.register("tv_resnet34")(tv_resnet(34))
MODELS.register("tv_resnet50")(tv_resnet(50))


@MODELS.register("tv_mobilenet_v2")
def tv_mobilenet_v2(num_classes: int, in_channels: int) -> StagedClassifier:
    """torchvision MobileNetV2 (width 1.0), split before the 160-channel groups."""
    tv = _tv().mobilenet_v2(weights=None, num_classes=num_classes)
    return _mobilenet(tv.features, V2_GROUPS, tv.classifier, in_channels, "stage6")


@MODELS.register("tv_mobilenet_v3_small")
def tv_mobilenet_v3_small(num_classes: int, in_channels: int) -> StagedClassifier:
    """torchvision MobileNetV3-Small, split before its last (96-channel) groups."""
    tv = _tv().mobilenet_v3_small(weights=None, num_classes=num_classes)
    return _mobilenet(tv.features, V3_SMALL_GROUPS, tv.classifier, in_channels, "stage5")


def torchvision_key_map(arch: str, num_classes: int) -> dict[str, str]:
    """torchvision state_dict key -> this zoo's key for `arch` (3-channel input)."""
    tv = getattr(_tv(), arch.removeprefix("tv_"))(weights=None, num_classes=num_classes)
    original = {id(t): k for k, t in tv.state_dict(keep_vars=True).items()}
    if arch.startswith("tv_resnet"):
        staged = _resnet(tv, 3)
    else:
        groups, split = (
            (V2_GROUPS, "stage6") if arch == "tv_mobilenet_v2" else (V3_SMALL_GROUPS, "stage5")
        )
        staged = _mobilenet(tv.features, groups, tv.classifier, 3, split)
    # The staged network holds the very same tensors: match them by identity.
    return {original[id(t)]: k for k, t in staged.state_dict(keep_vars=True).items()}
