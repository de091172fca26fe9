import math

import pytest
import torch

from pipeline.objectives.losses import (
    cross_entropy,
    decoupled_kd,
    dist_relations,
    kd_kl,
    standardise,
)


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


def test_standardise_gives_each_row_zero_mean_and_unit_sample_std() -> None:
    out = standardise(torch.tensor([[1.0, 2.0, 3.0], [10.0, 30.0, 20.0]]))
    torch.testing.assert_close(out, torch.tensor([[-1.0, 0.0, 1.0], [-1.0, 1.0, 0.0]]))


def test_decoupled_kd_matches_hand_computed_values() -> None:
    # Three classes, label 0, τ = 1. Student logits 0: p_s = (1/3, 1/3, 1/3). Teacher logits
    # (0, ln 3, 0): p_t = (1/5, 3/5, 1/5). TCKD compares (0.2, 0.8) with (1/3, 2/3); NCKD the
    # non-target distributions (3/4, 1/4) with (1/2, 1/2).
    student = torch.zeros(1, 3)
    teacher = torch.tensor([[0.0, math.log(3.0), 0.0]])
    tckd, nckd = decoupled_kd(student, teacher, torch.tensor([0]), temperature=1.0)
    assert tckd.item() == pytest.approx(0.2 * math.log(0.6) + 0.8 * math.log(1.2), rel=1e-5)
    assert nckd.item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), rel=1e-5)
    tckd, nckd = decoupled_kd(student, teacher, torch.tensor([0]), temperature=2.0)
    assert tckd.item() > 0 and nckd.item() > 0  # τ² scaling of the softened terms


def test_decoupled_kd_recombines_into_classic_kd() -> None:
    # The paper's identity: KD = TCKD + (1 - p_target^teacher) * NCKD, image by image.
    student, teacher, labels = torch.randn(5, 7), torch.randn(5, 7), torch.randint(0, 7, (5,))
    for i in range(5):
        s, t, y = student[i : i + 1], teacher[i : i + 1], labels[i : i + 1]
        tckd, nckd = decoupled_kd(s, t, y, temperature=3.0)
        p_target = torch.softmax(t / 3.0, -1)[0, y].item()
        expected = kd_kl(s, t, 3.0).item()
        assert (tckd + (1 - p_target) * nckd).item() == pytest.approx(expected, rel=1e-4)


def test_dist_relations_match_hand_computed_values() -> None:
    # Two classes, τ = 1. Image 1: the student prefers class 0, the teacher class 1 (Pearson -1);
    # image 2: both prefer class 1 (+1): inter = 1 - 0 = 1. The teacher gives each class the same
    # probability on both images, so its columns have no variance: Pearson 0, intra = 1.
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    teacher = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    inter, intra = dist_relations(student, teacher, temperature=1.0)
    assert inter.item() == pytest.approx(1.0, abs=1e-5)
    assert intra.item() == pytest.approx(1.0, abs=1e-5)
    logits = torch.randn(4, 3)
    same = dist_relations(logits, logits, temperature=4.0)
    assert all(term.item() == pytest.approx(0.0, abs=1e-4) for term in same)  # τ² x fp32 eps


def test_dist_relations_ignore_a_scaled_and_shifted_student_distribution() -> None:
    # Pearson correlation: a student whose probabilities are an affine map of the teacher's is
    # a perfect match for DIST, though KL would still penalise it.
    teacher = torch.randn(6, 5)
    p = torch.softmax(teacher, -1)
    affine = torch.log(0.5 * p + 0.1)  # softmax(log x) = x / sum(x): an affine map of p per row
    inter, _ = dist_relations(affine, teacher, temperature=1.0)
    assert inter.item() == pytest.approx(0.0, abs=1e-5)
    assert kd_kl(affine, teacher, 1.0).item() > 1e-3
