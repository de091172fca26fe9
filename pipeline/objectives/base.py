"""The Objective interface: the maths of one training step, returned as a total and named parts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from pipeline.objectives.losses import standardise

COMPILED_GRAPHS = 128  # dynamo's recompile limit while objectives are compiled (default 8)


@dataclass(frozen=True)
class ExtraNetwork:
    """A trained network besides the deployable one, worth saving (e.g. SOKD's improved teacher)."""

    network: nn.Module
    arch_of: Literal["teacher", "student"]  # whose architecture (and input spec) it has


@dataclass(frozen=True)
class StepOutput:
    loss: Tensor  # scalar; the only thing backward() sees
    logits: Tensor  # (B, K) logits of the network being trained for deployment, for accuracy
    parts: dict[str, Tensor]  # weighted terms, e.g. {"student/ce": ..., "bridge/kl_teacher": ...}


class Objective(nn.Module):
    """Owns the networks it trains, holds frozen ones; never the loop, optimiser or device."""

    config: type  # the dataclass of this objective's params section (`distill.<name>`)
    frozen: tuple[str, ...] = ()  # child modules that stay in eval mode whatever train() is told
    # The run's length, set by the training set-up before the first step: `progress x epochs`
    # is the number of epochs done, for schedules stated in epochs (e.g. DKD's warm-up).
    epochs: int = 1

    def step(self, images: Tensor, labels: Tensor, progress: float) -> StepOutput:
        """Compute the loss of one batch; `progress` in [0, 1) is the fraction of training done."""
        raise NotImplementedError

    def deployable(self) -> nn.Module:
        """The network that is evaluated, checkpointed and exported."""
        raise NotImplementedError

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser groups: everything that still requires a gradient, at learning rate `lr`."""
        return [
            {"params": [p for p in self.parameters() if p.requires_grad], "lr": lr, "name": "all"}
        ]

    def extra_networks(self) -> dict[str, ExtraNetwork]:
        """Other trained networks worth keeping, by role (e.g. SOKD's "improved_teacher")."""
        return {}

    def compile_networks(self) -> None:
        """torch.compile every child network in place (weights and state_dict keys unchanged).

        Every child compiles through one wrapper, so dynamo counts all their graphs (network x
        train/eval x grad mode x batch size) against one recompile limit. At the default of 8 the
        later ones silently ran eager (measured on an H100: compiled SOKD at 0.98x eager), so the
        limit is raised to hold them all, and shapes stay static: a batch size is one more graph.
        """
        config = torch._dynamo.config
        key = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
        setattr(config, key, max(getattr(config, key), COMPILED_GRAPHS))
        for module in self.children():
            module.compile(dynamic=False)

    def train(self, mode: bool = True) -> Objective:
        super().train(mode)
        for name in self.frozen:  # a frozen teacher keeps its BatchNorm running statistics
            getattr(self, name).eval()
        return self


class FrozenTeacherObjective(Objective):
    """A student taught by a frozen, pretrained teacher (eval mode, no gradients); the student
    is what ships. `build_objective` refuses to build one without a teacher of `teacher_kind`."""

    frozen = ("teacher",)
    teacher_kind: type[nn.Module] = nn.Module  # the feature objectives tap a StagedClassifier

    def __init__(self, student: nn.Module, teacher: nn.Module, cfg: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.student = student
        self.teacher = freeze(teacher)

    def teacher_logits(self, images: Tensor) -> Tensor:
        """The frozen teacher's logits for `images`, as a fixed target."""
        with torch.inference_mode():
            logits = self.teacher(images)
        return logits.clone()  # a tensor made under inference_mode may not be saved for backward

    def deployable(self) -> nn.Module:
        return self.student


def linear_warmup(progress: float, epochs: int, warmup_epochs: float) -> float:
    """A loss weight ramping linearly from 0 to 1 over the first `warmup_epochs` of `epochs`
    (`progress` is the fraction of training done); 1 throughout when `warmup_epochs` is 0."""
    if warmup_epochs == 0:
        return 1.0
    return min(progress * epochs / warmup_epochs, 1.0)


def logit_view(*logits: Tensor, standardise_them: bool) -> tuple[Tensor, ...]:
    """The logits a distillation term compares: z-scored when logit standardisation is on."""
    return tuple(standardise(z) for z in logits) if standardise_them else logits


def freeze(module: nn.Module) -> nn.Module:
    """Stop gradients into `module` and put it in eval mode; returns it for chaining."""
    return module.requires_grad_(False).eval()
