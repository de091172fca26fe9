"""MODELS registry: name in params.yaml -> factory(num_classes, in_channels) -> StagedClassifier."""

from collections.abc import Callable

from pipeline.models.staged import StagedClassifier
from pipeline.registry import Registry

ModelFactory = Callable[[int, int], StagedClassifier]
MODELS: Registry[ModelFactory] = Registry("model")


def create_model(name: str, num_classes: int, in_channels: int) -> StagedClassifier:
    """Build registered model `name` for `num_classes` classes and `in_channels` input channels."""
    return MODELS.get(name)(num_classes, in_channels)


# Registration happens on import; these imports must come after MODELS exists.
from pipeline.models import (  # noqa: E402, F401
    cifar_resnet,
    lenet,
    mobilenetv2,
    shufflenetv2,
    torchvision_zoo,
    vgg,
    wrn,
)
