"""timm CNNs as chains of named stages (`timm:<name>` in params): teacher, student or bridge.

No table per model: the chain is derived from timm's own structure. A model's top-level modules
are laid out in order, and the container that holds its feature stages (`blocks`, `stages`, as
named by `feature_info`) is opened up into one link per stage. The chain is accepted only when it
computes exactly what the model's own forward does (checked once per architecture on a small
input), so a model whose forward is not a plain sequence is refused in one line rather than
trained wrong. The SOKD split point is the first link after the second-to-last feature stage:
the last stage plus the head, which is what the bridge copies. timm is an optional extra
(`pip install 'sokd-pipeline[timm]'`).
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pipeline.core.errors import ConfigError
from pipeline.models.staged import StagedClassifier

PREFIX = "timm:"


def timm_module() -> Any:
    """The timm package, or one ConfigError saying how to install it."""
    try:
        import timm
    except ImportError:
        raise ConfigError(
            "timm is not installed, so `timm:` models are unavailable; "
            "pip install 'sokd-pipeline[timm]' (or pip install timm)"
        ) from None
    return timm


def check_name(name: str) -> None:
    """Fail in one line unless `name` (without the prefix) is a timm model."""
    timm = timm_module()
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise ConfigError(f"unknown timm model {name!r}{hint}")


@dataclass(frozen=True)
class PretrainedConfig:
    """What timm says a model's pretrained weights expect."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: tuple[int, int]  # (H, W)
    interpolation: str
    crop_pct: float
    licence: str = ""  # the weights' licence as timm records it (e.g. apache-2.0)


def pretrained_config(name: str) -> PretrainedConfig:
    cfg = timm_module().create_model(name, pretrained=False).pretrained_cfg
    _, h, w = cfg.get("input_size", (3, 224, 224))
    return PretrainedConfig(
        tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        (int(h), int(w)),
        str(cfg.get("interpolation", "bilinear")),
        float(cfg.get("crop_pct", 0.875)),
        str(cfg.get("license", "")),
    )


def _links(model: nn.Module) -> tuple[list[tuple[str, nn.Module]], list[str]]:
    """The model's modules in forward order, stage containers opened; and its stage links."""
    stages = [info["module"] for info in model.feature_info]
    containers = {s.split(".")[0] for s in stages if "." in s}
    links: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if name in containers:
            links += [(f"{name}_{sub}", module) for sub, module in child.named_children()]
        else:
            links.append((name, child))
    return links, [s.replace(".", "_") for s in stages]


@functools.cache
def _chain_matches(name: str) -> bool:
    """Whether the chain of links computes what the model's own forward computes.

    On a forked generator: the probe's initialisation must not move torch's global generator,
    or the first timm network built in a process would draw its weights and batches differently
    from the next one (and from its seed).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = timm_module().create_model(name, pretrained=False, num_classes=3).eval()
        x = torch.randn(2, 3, 64, 64)
    links, _ = _links(model)
    with torch.no_grad():
        y = x
        for _, module in links:
            y = module(y)
        return bool(torch.allclose(y, model(x), rtol=1e-4, atol=1e-5))


def chain(model: nn.Module, name: str) -> StagedClassifier:
    """`model` (a timm CNN) regrouped as a StagedClassifier sharing its modules."""
    links, stages = _links(model)
    names = [n for n, _ in links]
    if len(stages) < 2 or stages[-2] not in names or not _chain_matches(name):
        raise ConfigError(
            f"timm model {name!r} is not a plain chain of stages (its forward does more than run "
            f"its modules in order); choose a CNN such as resnet18, mobilenetv3_small_100, "
            f"efficientnet_b0, regnetx_002 or convnext_atto"
        )
    split_point = names[names.index(stages[-2]) + 1]
    return StagedClassifier(OrderedDict(links), split_point, initialise=False)


def build(arch: str, num_classes: int, in_channels: int) -> StagedClassifier:
    """A freshly initialised `timm:<name>` network for `num_classes` and `in_channels`."""
    name = arch.removeprefix(PREFIX)
    check_name(name)
    model = timm_module().create_model(
        name, pretrained=False, num_classes=num_classes, in_chans=in_channels
    )
    return chain(model, name)


def key_map(arch: str, num_classes: int, in_channels: int) -> dict[str, str]:
    """timm state_dict key -> this chain's key (the same tensors, regrouped)."""
    name = arch.removeprefix(PREFIX)
    model = timm_module().create_model(
        name, pretrained=False, num_classes=num_classes, in_chans=in_channels
    )
    original = {id(t): k for k, t in model.state_dict(keep_vars=True).items()}
    staged = chain(model, name)
    return {original[id(t)]: k for k, t in staged.state_dict(keep_vars=True).items()}
