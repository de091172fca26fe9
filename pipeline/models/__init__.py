"""MODELS registry: name in params.yaml -> factory(num_classes, in_channels) -> StagedClassifier.

Every family module registers its names when this package is imported (the families are plain
torch modules; torchvision is imported only when one of its networks is built), and timm:<name>
goes to `timm_zoo.py`, imported only then (timm is an optional extra).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING

from pipeline.core.registry import Registry

if TYPE_CHECKING:
    from pipeline.models.staged import StagedClassifier

ModelFactory = Callable[[int, int], "StagedClassifier"]
MODELS: Registry[ModelFactory] = Registry("model")
TIMM_PREFIX = "timm:"


def timm_models() -> ModuleType:
    """The timm adapter `timm_zoo` (timm is an optional extra), imported on first use. (Not
    named after the module: importing it sets that name on this package.)"""
    return importlib.import_module(f"{__name__}.timm_zoo")


def create_model(name: str, num_classes: int, in_channels: int) -> StagedClassifier:
    """Build model `name` for `num_classes` classes and `in_channels` input channels: a
    registered name, or `timm:<name>` for any timm CNN (timm is an optional extra)."""
    if name.startswith(TIMM_PREFIX):
        return timm_models().build(name, num_classes, in_channels)
    return MODELS.get(name)(num_classes, in_channels)


def check_model_name(name: str, where: str) -> None:
    """Fail in one line, naming `where` (a params key), unless `name` can be built."""
    from pipeline.core.errors import ConfigError

    try:
        if name.startswith(TIMM_PREFIX):
            timm_models().check_name(name.removeprefix(TIMM_PREFIX))
        else:
            MODELS.get(name)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


# The families register themselves on import (after MODELS exists: they import it from here).
from pipeline.models import (  # noqa: E402, F401
    cifar_resnet,
    lenet,
    mobilenetv2,
    shufflenetv2,
    torchvision_zoo,
    vgg,
    wrn,
)
