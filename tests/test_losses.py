import math

import pytest
import torch

from pipeline.losses import cross_entropy, kd_kl


def test_kd_kl_vanishes_when_logits_match_target() -> None:
    logits = torch.randn(4, 10)
    assert kd_kl(logits, logits, temperature=4.0).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_kl_matches_a_hand_computed_value() -> None:
    # Two classes, τ = 2: target logits (0, 2ln3) give p = (1/4, 3/4); zero logits q = (1/2, 1/2).
    target = torch.tensor([[0.0, 2 * math.log(3.0)]])
    student = torch.zeros(1, 2)
    kl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert kd_kl(student, target, temperature=2.0).item() == pytest.approx(4 * kl, rel=1e-5)


def test_kd_kl_is_a_batch_mean_not_a_sum() -> None:
    a, b = torch.randn(1, 5), torch.randn(1, 5)
    single = kd_kl(a, b, 3.0)
    repeated = kd_kl(a.repeat(8, 1), b.repeat(8, 1), 3.0)
    assert repeated.item() == pytest.approx(single.item(), rel=1e-5)


def test_kd_kl_scales_by_temperature_squared() -> None:
    a, b = torch.randn(2, 6), torch.randn(2, 6)
    # Softening by τ is dividing the logits by τ; the loss then carries an extra factor τ².
    assert kd_kl(a, b, 4.0).item() == pytest.approx(16 * kd_kl(a / 4, b / 4, 1.0).item(), rel=1e-5)
    # For logits much smaller than τ, τ²·KL tends to a constant, so gradient scale is kept.
    assert kd_kl(a, b, 40.0).item() == pytest.approx(kd_kl(a, b, 80.0).item(), rel=0.05)


def test_kd_kl_gradient_reaches_only_the_student_when_target_detached() -> None:
    student = torch.randn(3, 4, requires_grad=True)
    target = torch.randn(3, 4, requires_grad=True)
    kd_kl(student, target.detach(), 4.0).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert target.grad is None


def test_cross_entropy_is_mean_negative_log_likelihood() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0])
    expected = (-torch.log_softmax(logits, 1)[[0, 1], [0, 0]]).mean()
    assert cross_entropy(logits, labels).item() == pytest.approx(expected.item())


def test_losses_run_in_fp32_under_bf16_inputs() -> None:
    a, b = torch.randn(2, 10).bfloat16(), torch.randn(2, 10).bfloat16()
    assert kd_kl(a, b, 4.0).dtype == torch.float32
    assert cross_entropy(a, torch.tensor([1, 2])).dtype == torch.float32
