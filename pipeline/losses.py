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
