"""Inference over a batch source, and the accuracy of its logits."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pipeline.core.runtime import Runtime
from pipeline.data.batches import BatchSource


@torch.no_grad()
def predict(model: nn.Module, batches: BatchSource, runtime: Runtime) -> Tensor:
    """Logits (N, K) of `model` in eval mode over every image of `batches`, as fp32 on the CPU."""
    was_training = model.training
    model.eval()
    try:
        with runtime.autocast():
            outs = [model(images).float() for images, _ in batches]
    finally:
        model.train(was_training)
    return torch.cat(outs).cpu()


def topk_accuracy(logits: Tensor, labels: Tensor, k: int) -> float:
    """Fraction of rows whose label is among the k highest logits."""
    k = min(k, logits.shape[1])
    hits = (logits.topk(k, dim=1).indices == labels[:, None].to(logits.device)).any(1)
    return hits.sum().item() / len(hits)
