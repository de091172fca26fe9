"""BatchNorm you can trust: re-estimated running statistics, and a warning when eval mode fails.

A network that trains well can still score chance in eval mode when its BatchNorm running
statistics lag behind its weights: torchvision's MobileNetV3 uses momentum 0.01, so after a few
hundred steps the statistics are still near their initial values. Re-estimating them after
training on a seeded sample of training images (preprocessed as in evaluation) makes the saved
network's eval mode match what it learnt.
"""

from __future__ import annotations

import dataclasses
import logging

import torch
from torch import nn

from pipeline.core.config import TrainConfig
from pipeline.core.inputs import InputSpec
from pipeline.core.runtime import Runtime
from pipeline.data.batches import BatchSource, make_batches
from pipeline.data.datasets import Prepared
from pipeline.training.inference import predict, topk_accuracy

log = logging.getLogger(__name__)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def has_batchnorm(network: nn.Module) -> bool:
    return any(isinstance(m, _NORMS) and m.track_running_stats for m in network.modules())


@torch.no_grad()
def recalibrate(
    network: nn.Module,
    data: Prepared,
    spec: InputSpec,
    images: int,
    batch_size: int,
    runtime: Runtime,
    seed: int,
) -> None:
    """Replace every BatchNorm's running statistics by their average over `images` seeded
    training images (evaluation preprocessing); weights are not touched."""
    norms = [m for m in network.modules() if isinstance(m, _NORMS) and m.track_running_stats]
    if not norms or images <= 0:
        return
    train = data.splits["train"]
    pick = torch.randperm(len(train.labels), generator=torch.Generator().manual_seed(seed))
    sample = dataclasses.replace(data, splits={"sample": train.subset(pick[:images])})
    momenta = [m.momentum for m in norms]
    was_training = network.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over every batch, not an exponential one
    network.train()
    try:
        with runtime.autocast():
            for batch, _ in make_batches(sample, "sample", batch_size, None, runtime, seed, spec):
                network(batch)
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        network.train(was_training)


def near_chance(val_top1: float, train_top1: float, num_classes: int) -> str | None:
    """One line saying why, when validation top-1 is near chance and training top-1 is not."""
    chance = 1 / num_classes
    if val_top1 > 1.5 * chance or train_top1 - val_top1 < 0.2:
        return None
    return (
        f"validation top-1 {100 * val_top1:.1f}% is near chance ({100 * chance:.1f}%) while "
        f"training top-1 reached {100 * train_top1:.1f}%: the network behaves differently in "
        f"eval mode. Likely causes: BatchNorm running statistics that lag behind the weights "
        f"(keep train.bn_recalibration_images > 0), or evaluation preprocessing that differs "
        f"from training (check prepare.resize and train.input_size)"
    )


def val_top1(network: nn.Module, val: BatchSource, runtime: Runtime) -> float:
    """Top-1 of `network` on the validation batches."""
    return topk_accuracy(predict(network, val, runtime), val.labels, 1)


def recalibrate_all(
    name: str,
    networks: dict[str, nn.Module],
    measured: dict[str, float],
    data: Prepared,
    train: TrainConfig,
    runtime: Runtime,
    seed: int,
    spec: InputSpec,
    val: BatchSource,
) -> tuple[dict[str, float], dict[str, float]]:
    """Re-estimate BatchNorm statistics of every network that is saved; val top-1 around it.

    `measured`: val top-1 already known for a role as the network stands (the deployable's, from
    its last epoch), so no pass over val is repeated. Returns the metrics and each role's val
    top-1 as saved.
    """
    metrics: dict[str, float] = {}
    saved: dict[str, float] = {}
    for role, network in networks.items():
        before = measured[role] if role in measured else val_top1(network, val, runtime)
        saved[role] = before
        if not has_batchnorm(network) or not train.bn_recalibration_images:
            continue
        images, batch = train.bn_recalibration_images, train.batch_size
        recalibrate(network, data, spec, images, batch, runtime, seed)
        saved[role] = after = val_top1(network, val, runtime)
        metrics |= {f"bn/{role}/val_top1_before": before, f"bn/{role}/val_top1_after": after}
        log.info(
            "%s: BatchNorm statistics of the %s re-estimated on %d training images: "
            "val top-1 %.2f%% -> %.2f%%",
            name,
            role,
            min(images, len(data.splits["train"].labels)),
            100 * before,
            100 * after,
        )
    return metrics, saved
