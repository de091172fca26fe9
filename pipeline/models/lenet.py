"""LeNet-5 (LeCun et al., Proc. IEEE 1998): two conv-pool stages and three linear layers.

The zoo's one network without BatchNorm: its output for an image does not depend on the rest of
the batch, which makes multi-process training exactly equal to one process with the same global
batch (the distributed test relies on it). An adaptive pool keeps it usable at any input size.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from pipeline.models import MODELS
from pipeline.models.staged import StagedClassifier


@MODELS.register("lenet5")
def lenet5(num_classes: int, in_channels: int) -> StagedClassifier:
    """LeNet-5 with ReLU and max-pooling; the head starts at the second conv stage."""
    return StagedClassifier(
        OrderedDict(
            [
                (
                    "stem",
                    nn.Sequential(
                        nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2)
                    ),
                ),
                ("stage1", nn.Sequential(nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2))),
                ("pool", nn.AdaptiveAvgPool2d(5)),
                ("flatten", nn.Flatten()),
                ("fc1", nn.Sequential(nn.Linear(16 * 5 * 5, 120), nn.ReLU())),
                ("fc2", nn.Sequential(nn.Linear(120, 84), nn.ReLU())),
                ("fc", nn.Linear(84, num_classes)),
            ]
        ),
        split_point="stage1",
    )
