"""Feature distillation from a frozen teacher, the shared step of AT and FitNet (single stage).

The student's last-stage feature map imitates the teacher's, next to cross-entropy on the labels;
each objective (`at.py`, `fitnet.py`) says how the two maps are compared.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pipeline.models.staged import StagedClassifier, forward_with_tap
from pipeline.objectives.base import FrozenTeacherObjective, StepOutput
from pipeline.objectives.losses import cross_entropy


class FeatureKD(FrozenTeacherObjective):
    """A student whose last-stage feature map imitates the frozen teacher's, beside the labels."""

    teacher_kind = StagedClassifier  # the student imitates its last stage's output
    cfg: Any  # the subclass's config: ce_weight and its feature term's weight

    def step(self, images: Tensor, labels: Tensor, progress: float) -> StepOutput:
        with torch.inference_mode():
            teacher_feat, _ = forward_with_tap(self.teacher, self.teacher.split_point, images)
        teacher_feat = teacher_feat.clone()  # an inference tensor may not be saved for backward
        student_feat, logits = forward_with_tap(self.student, self.student.split_point, images)
        parts = {
            "student/ce": self.cfg.ce_weight * cross_entropy(logits, labels),
            **self.feature_parts(student_feat, teacher_feat),
        }
        return StepOutput(loss=torch.stack(list(parts.values())).sum(), logits=logits, parts=parts)

    def feature_parts(self, student: Tensor, teacher: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError
