"""Loss terms as pure functions of tensors and floats; softmax and KL run in fp32 under autocast.

Every function returns a scalar averaged over the batch (`batchmean`): the KL sums over classes and
averages over images, which is the mathematically correct KL per example.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy of logits (B, K) against integer labels (B,)."""
    return F.cross_entropy(logits.float(), labels)


def kd_kl(logits: Tensor, target_logits: Tensor, temperature: float) -> Tensor:
    """τ²·KL(softmax(target/τ) ‖ softmax(logits/τ)), batchmean (Hinton et al., 2015, §2).

    The τ² factor keeps gradient magnitudes independent of τ. Gradients flow into `logits`, and into
    `target_logits` too unless the caller detaches them: objectives detach every peer target.
    """
    log_p = F.log_softmax(logits.float() / temperature, dim=-1)  # (B, K)
    log_q = F.log_softmax(target_logits.float() / temperature, dim=-1)  # (B, K)
    return F.kl_div(log_p, log_q, log_target=True, reduction="batchmean") * temperature**2


def match_spatial(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Average-pool the larger of two feature maps (B, C, H, W) to the other's spatial size."""
    if a.shape[-2:] == b.shape[-2:]:
        return a, b
    size = (min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1]))
    return F.adaptive_avg_pool2d(a, size), F.adaptive_avg_pool2d(b, size)


def attention_map(features: Tensor) -> Tensor:
    """Attention of features (B, C, H, W): channel mean of squares, L2-normalised, (B, H*W)."""
    return F.normalize(features.float().pow(2).mean(1).flatten(1), dim=1)


def attention_transfer(features: Tensor, target_features: Tensor) -> Tensor:
    """Mean squared distance of attention maps (Zagoruyko & Komodakis, ICLR 2017, eq. 2 with p = 2).

    Channel-free: the two networks may have any channel counts; spatial sizes are matched by
    pooling. Averaged over positions and batch, as the CIFAR KD zoo does (weighted by ~1000 there).
    """
    a, b = match_spatial(features, target_features)
    return (attention_map(a) - attention_map(b)).pow(2).mean()


def hint_regression(adapted_features: Tensor, target_features: Tensor) -> Tensor:
    """FitNet hint loss (Romero et al., ICLR 2015): mean squared error to the hint layer's output.

    The student's features arrive already mapped to the target's channels by a trainable 1x1
    convolution (the regressor); spatial sizes are matched by pooling.
    """
    a, b = match_spatial(adapted_features, target_features)
    return F.mse_loss(a.float(), b.float())
