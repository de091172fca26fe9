"""The gate: what a shipped file must meet against the torch fp32 student it was made from.

`verify` holds every file to its target's thresholds (`verify.<target>`) on the test split;
`quantize` holds its INT8 file to `verify.int8` on validation first, with margins for the test
measurement `verify` will make. Both read their figures and their verdicts from here, so the two
can never disagree on what meeting the gate means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.core.config import GateConfig, QuantizeConfig, VerifyConfig

ROUNDING = 1e-9  # far below one image in any test set, far above float error in a difference


def figures(name: str, torch_logits: np.ndarray, logits: np.ndarray, labels: np.ndarray) -> dict:
    """One file's figures against torch fp32: top-1, its drop, agreement, max |Δlogit|."""
    top1 = float((logits.argmax(1) == labels).mean())
    return {
        f"{name}/top1": top1,
        f"{name}/top1_drop": float((torch_logits.argmax(1) == labels).mean()) - top1,
        f"{name}/agreement": float((torch_logits.argmax(1) == logits.argmax(1)).mean()),
        f"{name}/max_abs_logit_diff": float(np.abs(torch_logits - logits).max()),
    }


def failures(
    gate: GateConfig, where: str, split: str, top1_drop: float, agreement: float, diff: float = 0.0
) -> list[str]:
    """One message per threshold of `gate` missed on `split` (`where`: its params key). A figure
    exactly at its threshold meets it: 0.694 - 0.689 is 0.0050000000000000044 in floating point,
    and five images in a thousand must pass a 0.005 allowance."""
    missed = []
    if top1_drop > gate.max_top1_drop + ROUNDING:
        missed.append(
            f"{split} top-1 is {top1_drop:.4f} below torch fp32 ({where}.max_top1_drop "
            f"{gate.max_top1_drop})"
        )
    if agreement < gate.min_agreement - ROUNDING:
        missed.append(
            f"{split} agreement with torch fp32 {agreement:.4f} < {where}.min_agreement "
            f"{gate.min_agreement}"
        )
    if gate.max_abs_logit_diff and diff > gate.max_abs_logit_diff:
        missed.append(
            f"max |Δlogit| {diff:.2e} > {where}.max_abs_logit_diff {gate.max_abs_logit_diff:.0e}"
        )
    return missed


def file_failures(name: str, measured: dict, cfg: VerifyConfig) -> list[str]:
    """What the file of target `name` misses on test: `verify.min_top1` and its own gate."""
    top1 = measured[f"{name}/top1"]
    missed = [f"top-1 {top1:.4f} < min_top1 {cfg.min_top1}"] if top1 < cfg.min_top1 else []
    missed += failures(
        cfg.gate(name),
        f"verify.{name}",
        "test",
        measured[f"{name}/top1_drop"],
        measured[f"{name}/agreement"],
        measured[f"{name}/max_abs_logit_diff"],
    )
    return [f"{name} {message}" for message in missed]


def binomial_se(fraction: float, images: int) -> float:
    """The standard error of a fraction measured on `images` images."""
    return math.sqrt(fraction * (1 - fraction) / images)


def paired_drop_se(lost: int, gained: int, images: int) -> float:
    """The standard error of a top-1 difference between two models on the same images, from the
    images only one of them gets right (`lost`: fp32 right, INT8 wrong; `gained`: the reverse).
    Images both get wrong, even with different classes, move neither top-1: a weak student's
    many wrong-to-wrong flips cost agreement, not accuracy."""
    return math.sqrt(max(lost + gained - (lost - gained) ** 2 / images, 0.0)) / images


@dataclass(frozen=True)
class Margins:
    """How far a validation figure must clear the gate: the quantize config's margins, in
    standard errors of the difference between validation and the test split `verify` will
    measure (independent samples: the variances add)."""

    agreement_se: float
    drop_se: float
    scale: float  # sqrt(1 + validation images / test images)

    @classmethod
    def of(cls, cfg: QuantizeConfig, val_images: int, test_images: int | None) -> Margins:
        test = test_images or val_images  # test size unknown: as large as validation
        return cls(cfg.agreement_margin_se, cfg.drop_margin_se, math.sqrt(1 + val_images / test))

    def label(self) -> str:
        return (
            f"INT8 on validation, margins for the test measurement included (agreement "
            f"{self.agreement_se:g}, top-1 drop {self.drop_se:g} standard errors):"
        )


@dataclass(frozen=True)
class Held:
    """A file's predictions against fp32's on validation, and what it misses with margins."""

    top1_drop: float
    agreement: float
    missed: list[str]  # the gate's thresholds it misses (empty: it meets the gate)
    images: int

    @property
    def agreement_se(self) -> float:
        """The standard error of `agreement`: differences below it are noise."""
        return binomial_se(self.agreement, self.images)


def held(
    gate: GateConfig, margins: Margins, predicted: np.ndarray, fp32: np.ndarray, labels: np.ndarray
) -> Held:
    """Predicted classes against fp32's, held to `gate` with `margins` to spare: the agreement
    less its margin, the top-1 drop plus its own (from the paired standard error)."""
    fp32_right, right = fp32 == labels, predicted == labels
    lost, gained, n = (
        int((fp32_right & ~right).sum()),
        int((right & ~fp32_right).sum()),
        len(labels),
    )
    drop, agreement = (lost - gained) / n, float((predicted == fp32).mean())
    missed = failures(
        gate,
        "verify.int8",
        margins.label(),
        drop + margins.drop_se * margins.scale * paired_drop_se(lost, gained, n),
        agreement - margins.agreement_se * margins.scale * binomial_se(agreement, n),
    )
    return Held(drop, agreement, missed, n)
