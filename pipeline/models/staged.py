"""The model contract: a classifier is a chain of named modules whose forward returns logits only.

Running the children in order *is* the forward pass, so a network can be cut at any child by name:
the part before the cut is the trunk, the rest the head. SOKD's knowledge bridge is a copy of a
teacher's head, and feature taps read the output of a named child, without any change to the model.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import Tensor, nn

from pipeline.core.errors import ConfigError


class StagedClassifier(nn.Sequential):
    """`nn.Sequential` of named stages ending in logits; `split_point` names the head's start."""

    def __init__(
        self, stages: OrderedDict[str, nn.Module], split_point: str, initialise: bool = True
    ) -> None:
        super().__init__(stages)
        if split_point not in stages:
            raise ValueError(f"split point {split_point!r} is not one of {list(stages)}")
        self.split_point = split_point
        if initialise:  # False: the modules come initialised already (torchvision's own scheme)
            init_weights(self)


def init_weights(module: nn.Module) -> None:
    """He-normal convolutions (fan-out), unit BatchNorm, zero biases: the CIFAR model-zoo scheme."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            m.reset_parameters()
            nn.init.zeros_(m.bias)
    for m in module.modules():  # BN buffers too, so a re-initialised copy forgets its statistics
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()


def split(model: StagedClassifier, at: str) -> tuple[nn.Sequential, nn.Sequential]:
    """Return (trunk, head) sharing its modules; the head starts at child `at` ("": default)."""
    at = at or model.split_point
    names = [name for name, _ in model.named_children()]
    if at not in names or at == names[0]:
        raise ConfigError(
            f"cannot split {type(model).__name__} at {at!r}; choose one of {names[1:]}"
        )
    cut = names.index(at)
    children = list(model.named_children())
    return nn.Sequential(OrderedDict(children[:cut])), nn.Sequential(OrderedDict(children[cut:]))


def copy_head(head: nn.Sequential, reinitialise: bool) -> nn.Sequential:
    """A trainable copy of `head`: its weights, or a fresh initialisation when `reinitialise`."""
    bridge = copy.deepcopy(head).requires_grad_(True)
    if reinitialise:
        init_weights(bridge)
    return bridge


def conv_bn(
    c_in: int,
    c_out: int,
    kernel: int,
    stride: int = 1,
    groups: int = 1,
    act: type[nn.Module] | None = nn.ReLU,
) -> list[nn.Module]:
    """Conv (padding kernel // 2, no bias) + BatchNorm, then `act` unless it is None."""
    layers = [
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    return [*layers, act()] if act is not None else layers


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not) in `model`."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one forward pass on one (C, H, W) image: convs and linears."""
    total = 0

    def conv_hook(m: nn.Conv2d, _: tuple[Tensor, ...], out: Tensor) -> None:
        nonlocal total
        kh, kw = m.kernel_size
        total += out.numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, _: tuple[Tensor, ...], out: Tensor) -> None:
        nonlocal total
        total += out.numel() * m.in_features

    hooks = [
        m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, nn.Conv2d)
    ]
    hooks += [
        m.register_forward_hook(linear_hook) for m in model.modules() if isinstance(m, nn.Linear)
    ]
    was_training = model.training
    try:
        model.eval()(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return total


def forward_with_tap(chain: nn.Sequential, tap: str, images: Tensor) -> tuple[Tensor, Tensor]:
    """Run a chain of named modules; return (output of child `tap`, final output)."""
    tapped = None
    x = images
    for name, module in chain.named_children():
        x = module(x)
        if name == tap:
            tapped = x
    if tapped is None:
        names = [n for n, _ in chain.named_children()]
        raise ConfigError(f"no module named {tap!r} to tap; choose one of {names}")
    return tapped, x


@torch.no_grad()
def tap_channels(chain: nn.Sequential, tap: str) -> int:
    """Channels of child `tap`'s output, from a dry run on one small image (weights untouched)."""
    first_conv = next(m for m in chain.modules() if isinstance(m, nn.Conv2d))
    was_training = chain.training
    try:
        probe = torch.zeros(1, first_conv.in_channels, 32, 32, device=first_conv.weight.device)
        return forward_with_tap(chain.eval(), tap, probe)[0].shape[1]
    finally:
        chain.train(was_training)


def fresh_copy(network: nn.Module) -> nn.Module:
    """The same architecture, re-initialised and trainable: a peer that starts from scratch."""
    peer = copy.deepcopy(network).requires_grad_(True)
    init_weights(peer)
    return peer
