"""Loss terms as pure functions of tensors and floats; softmax and KL run in fp32 under autocast.

Every function returns a scalar averaged over the batch (`batchmean`): the KL sums over classes and
averages over images, which is the mathematically correct KL per example.
"""

from __future__ import annotations

import torch
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


def standardise(logits: Tensor, eps: float = 1e-7) -> Tensor:
    """Z-score each logit vector (B, K) over its classes (Sun et al., CVPR 2024, eq. 8).

    The distilled network then matches the teacher's *relations* between classes rather than the
    scale of its logits; temperatures apply after this step. Sample standard deviation, as the
    authors' code.
    """
    z = logits.float()
    return (z - z.mean(-1, keepdim=True)) / (z.std(-1, keepdim=True) + eps)


def decoupled_kd(
    logits: Tensor, target_logits: Tensor, labels: Tensor, temperature: float
) -> tuple[Tensor, Tensor]:
    """DKD's two terms (Zhao et al., CVPR 2022, eq. 7), each τ²-scaled and batchmean: (TCKD, NCKD).

    TCKD: KL between the binary distributions (p_target, 1 − p_target) of target and network.
    NCKD: KL between the distributions over the non-target classes alone (the target class is
    removed before the softmax). Classic KD is TCKD + (1 − p_target^teacher)·NCKD; DKD weights the
    two freely instead.
    """
    t2 = temperature**2
    target = F.one_hot(labels, logits.shape[-1]).bool()  # (B, K)
    z_s, z_t = logits.float() / temperature, target_logits.float() / temperature
    p_s, p_t = F.softmax(z_s, -1), F.softmax(z_t, -1)
    pt_s = (p_s * target).sum(-1)  # (B,) probability of the labelled class
    pt_t = (p_t * target).sum(-1)
    binary_s = torch.stack([pt_s, 1 - pt_s], -1).clamp_min(1e-12).log()  # (B, 2)
    binary_t = torch.stack([pt_t, 1 - pt_t], -1).clamp_min(1e-12).log()
    tckd = F.kl_div(binary_s, binary_t, log_target=True, reduction="batchmean") * t2
    # The non-target classes of each row, in order: (B, K - 1), then an ordinary KL between them.
    others = (~target).view(-1)
    rest_s = z_s.reshape(-1)[others].view(len(labels), -1)
    rest_t = z_t.reshape(-1)[others].view(len(labels), -1)
    nckd = kd_kl(rest_s, rest_t, 1.0) * t2
    return tckd, nckd


def _pearson_rows(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of matching rows of a and b (N, M): (N,)."""
    a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + eps)


def dist_relations(
    logits: Tensor, target_logits: Tensor, temperature: float
) -> tuple[Tensor, Tensor]:
    """DIST's two terms (Huang et al., NeurIPS 2022, eqs. 5 and 7), τ²-scaled: (inter, intra).

    Inter-class: 1 − mean Pearson correlation between the two networks' class distributions of
    each image (rows). Intra-class: the same between each class's probabilities across the batch
    (columns). Correlation instead of KL leaves the student free in scale and shift.
    """
    p = F.softmax(logits.float() / temperature, -1)  # (B, K)
    q = F.softmax(target_logits.float() / temperature, -1)
    t2 = temperature**2
    inter = (1 - _pearson_rows(p, q).mean()) * t2
    intra = (1 - _pearson_rows(p.T, q.T).mean()) * t2
    return inter, intra
