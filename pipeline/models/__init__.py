"""MODELS registry: name in params.yaml -> factory(num_classes, in_channels) -> StagedClassifier."""

from collections.abc import Callable

from pipeline.models.staged import StagedClassifier
from pipeline.registry import Registry

ModelFactory = Callable[[int, int], StagedClassifier]
MODELS: Registry[ModelFactory] = Registry("model")


def create_model(name: str, num_classes: int, in_channels: int) -> StagedClassifier:
    """Build model `name` for `num_classes` classes and `in_channels` input channels: a
    registered name, or `timm:<name>` for any timm CNN (timm is an optional extra)."""
    if name.startswith("timm:"):
        from pipeline.models import timm_zoo

        return timm_zoo.build(name, num_classes, in_channels)
    return MODELS.get(name)(num_classes, in_channels)


def check_model_name(name: str, where: str) -> None:
    """Fail in one line, naming `where` (a params key), unless `name` can be built."""
    from pipeline.errors import ConfigError

    try:
        if name.startswith("timm:"):
            from pipeline.models import timm_zoo

            timm_zoo.check_name(name.removeprefix("timm:"))
        else:
            MODELS.get(name)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


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
