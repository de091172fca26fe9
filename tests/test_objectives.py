import copy
import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline.core.config import Params
from pipeline.core.errors import ConfigError
from pipeline.models import create_model
from pipeline.objectives import OBJECTIVES, build_objective
from pipeline.objectives.base import linear_warmup


def _networks() -> tuple[nn.Module, nn.Module]:
    teacher = create_model("resnet20", 10, 1)
    teacher(torch.randn(8, 1, 28, 28))  # give BatchNorm non-trivial running statistics
    return create_model("resnet8", 10, 1), teacher.eval()


def _step(objective: nn.Module, steps: int = 1) -> None:
    optimizer = torch.optim.SGD([p for p in objective.parameters() if p.requires_grad], lr=0.1)
    for _ in range(steps):
        out = objective.train().step(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)), 0.0)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_teacher_gets_no_gradient_and_keeps_its_weights(name: str, tiny_params: Params) -> None:
    student, teacher = _networks()
    before = copy.deepcopy(teacher.state_dict())
    objective = build_objective(name, student, teacher, tiny_params.distill.objective(name))
    _step(objective, steps=2)
    assert all(p.grad is None for p in teacher.parameters())
    for key, value in teacher.state_dict().items():  # weights and BN running statistics
        torch.testing.assert_close(value, before[key], msg=key)


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_parts_sum_to_the_loss(name: str, tiny_params: Params) -> None:
    student, teacher = _networks()
    objective = build_objective(name, student, teacher, tiny_params.distill.objective(name))
    out = objective.train().step(torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,)), 0.0)
    assert out.loss.ndim == 0 and out.logits.shape == (4, 10)
    torch.testing.assert_close(out.loss, torch.stack(list(out.parts.values())).sum())


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_deployable_network_holds_no_teacher_tensors(name: str, tiny_params: Params) -> None:
    student, teacher = _networks()
    objective = build_objective(name, student, teacher, tiny_params.distill.objective(name))
    deployed = {id(t) for t in objective.deployable().state_dict(keep_vars=True).values()}
    teacher_tensors = {id(t) for t in teacher.state_dict(keep_vars=True).values()}
    assert deployed.isdisjoint(teacher_tensors)
    assert objective.deployable() is student


def test_sokd_trains_student_and_bridge_but_not_the_teacher(tiny_params: Params) -> None:
    student, teacher = _networks()
    objective = build_objective("sokd", student, teacher, tiny_params.distill.objective("sokd"))
    bridge_before = copy.deepcopy(objective.bridge.state_dict())
    student_before = copy.deepcopy(student.state_dict())
    _step(objective)
    changed = lambda before, module: any(  # noqa: E731
        not torch.equal(before[k], v) for k, v in module.state_dict().items()
    )
    assert changed(bridge_before, objective.bridge)
    assert changed(student_before, student)
    trainable = {id(p) for p in objective.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in [*student.parameters(), *objective.bridge.parameters()]}


def test_sokd_uses_two_parameter_groups_with_the_bridge_lr(tiny_params: Params) -> None:
    student, teacher = _networks()
    cfg = dataclasses.replace(tiny_params.distill.objective("sokd"), bridge_lr_mult=0.5)
    groups = build_objective("sokd", student, teacher, cfg).param_groups(0.1)
    assert [g["name"] for g in groups] == ["student", "bridge"]
    assert [g["lr"] for g in groups] == [0.1, 0.05]


def test_sokd_bridge_init_teacher_copies_the_head_and_random_does_not(tiny_params: Params) -> None:
    student, teacher = _networks()
    images = torch.randn(4, 1, 28, 28)
    for init, same in (("teacher", True), ("random", False)):
        cfg = dataclasses.replace(tiny_params.distill.objective("sokd"), bridge_init=init)
        objective = build_objective("sokd", student, teacher, cfg).eval()
        features = objective.teacher_trunk(images)
        agree = torch.allclose(objective.bridge(features), teacher(images), atol=1e-5)
        assert agree is same, init


def test_sokd_teacher_bn_train_lets_running_statistics_drift(tiny_params: Params) -> None:
    student, teacher = _networks()
    cfg = dataclasses.replace(tiny_params.distill.objective("sokd"), teacher_bn="train")
    objective = build_objective("sokd", student, teacher, cfg)
    before = teacher.stage1[0].bn1.running_mean.clone()
    _step(objective)
    assert teacher.training
    assert not torch.equal(before, teacher.stage1[0].bn1.running_mean)
    assert all(p.grad is None for p in teacher.parameters())


def test_sokd_improved_teacher_loads_into_the_teacher_architecture(tiny_params: Params) -> None:
    student, teacher = _networks()
    objective = build_objective("sokd", student, teacher, tiny_params.distill.objective("sokd"))
    _step(objective)
    extra = objective.extra_networks()["improved_teacher"]
    improved, arch_of = extra.network, extra.arch_of
    assert arch_of == "teacher"
    rebuilt = create_model("resnet20", 10, 1)
    rebuilt.load_state_dict(improved.state_dict())  # strict: every key matches
    images = torch.randn(2, 1, 28, 28)
    objective.eval()
    expected = objective.bridge(objective.teacher_trunk(images))
    torch.testing.assert_close(rebuilt.eval()(images), expected)


TAUGHT = [n for n in OBJECTIVES.names() if hasattr(OBJECTIVES.get(n), "teacher_kind")]


def test_every_objective_taught_by_a_frozen_teacher_is_known() -> None:
    assert set(TAUGHT) == set(OBJECTIVES.names()) - {"vanilla", "dml"}


@pytest.mark.parametrize("name", TAUGHT)
def test_an_objective_without_its_teacher_is_a_clear_error(name: str, tiny_params: Params) -> None:
    with pytest.raises(ConfigError, match=f"objective '{name}' needs a pretrained teacher"):
        build_objective(
            name, create_model("resnet8", 10, 1), None, tiny_params.distill.objective(name)
        )


# Which child modules of each objective are trained (everything else must stay frozen).
TRAINED = {
    "vanilla": {"student"},
    "kd": {"student"},
    "dkd": {"student"},
    "dist": {"student"},
    "at": {"student"},
    "fitnet": {"student", "regressor"},
    "dml": {"student", "peer"},
    "kd_dml": {"student", "peer"},
    "sokd": {"student", "bridge"},
    "sokd_at": {"student", "bridge"},
    "sokd_fitnet": {"student", "bridge", "regressor"},
}
# The networks whose loss a part is: "student/..." terms may only move these modules, and so on.
OWNERS = {"student": {"student", "regressor"}, "bridge": {"bridge"}, "peer": {"peer"}}


def test_every_objective_has_an_expected_trainable_set() -> None:
    assert set(TRAINED) == set(OBJECTIVES.names())


def _modules_with_grad(objective: nn.Module) -> set[str]:
    return {
        name
        for name, child in objective.named_children()
        if any(p.grad is not None and p.grad.abs().sum() > 0 for p in child.parameters())
    }


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_exactly_the_expected_networks_are_trained(name: str, tiny_params: Params) -> None:
    student, teacher = _networks()
    objective = build_objective(name, student, teacher, tiny_params.distill.objective(name))
    trainable = {
        n
        for n, child in objective.named_children()
        if any(p.requires_grad for p in child.parameters())
    }
    assert trainable == TRAINED[name]
    out = objective.train().step(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)), 0.0)
    out.loss.backward()
    assert _modules_with_grad(objective) == TRAINED[name]
    grouped = {id(p) for g in objective.param_groups(0.1) for p in g["params"]}
    assert grouped == {id(p) for p in objective.parameters() if p.requires_grad}


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_each_loss_part_moves_only_its_own_network(name: str, tiny_params: Params) -> None:
    # The detached cross terms: a student term must not reach the bridge or the peer, and back.
    student, teacher = _networks()
    objective = build_objective(name, student, teacher, tiny_params.distill.objective(name))
    out = objective.train().step(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)), 0.0)
    for key, part in out.parts.items():
        objective.zero_grad(set_to_none=True)
        part.backward(retain_graph=True)
        assert _modules_with_grad(objective) <= OWNERS[key.split("/")[0]], key


def test_dml_peer_starts_from_scratch_with_the_teacher_architecture(tiny_params: Params) -> None:
    student, teacher = _networks()
    objective = build_objective("dml", student, teacher, tiny_params.distill.objective("dml"))
    peer_state, teacher_state = objective.peer.state_dict(), teacher.state_dict()
    assert set(peer_state) == set(teacher_state)
    assert not torch.equal(peer_state["stem.0.weight"], teacher_state["stem.0.weight"])
    assert objective.extra_networks()["peer"].arch_of == "teacher"
    kd_dml = build_objective("kd_dml", student, teacher, tiny_params.distill.objective("kd_dml"))
    assert set(kd_dml.peer.state_dict()) == set(student.state_dict())
    assert kd_dml.extra_networks()["peer"].arch_of == "student"


def test_the_warmup_ramps_linearly_over_its_epochs() -> None:
    assert [linear_warmup(p, 10, 5.0) for p in (0.0, 0.25, 0.5, 0.9)] == [0.0, 0.5, 1.0, 1.0]
    assert linear_warmup(0.0, 10, 0.0) == 1.0  # no warm-up: full weight from the first step


@pytest.mark.parametrize(
    ("name", "ramped", "constant"),
    [
        ("dkd", ("student/tckd", "student/nckd"), ("student/ce",)),
        ("sokd", ("student/kl_bridge", "bridge/kl_student"), ("bridge/kl_teacher", "bridge/ce")),
    ],
)
def test_warmup_scales_only_the_terms_it_names(
    tiny_params: Params, name: str, ramped: tuple[str, ...], constant: tuple[str, ...]
) -> None:
    student, teacher = _networks()
    cfg = dataclasses.replace(tiny_params.distill.objective(name), warmup_epochs=5.0)
    objective = build_objective(name, student, teacher, cfg)
    objective.epochs = 10
    images, labels = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    half = objective.eval().step(images, labels, 0.25).parts  # eval: no BatchNorm update
    full = objective.eval().step(images, labels, 0.75).parts
    for key in ramped:
        assert full[key].item() > 0
        torch.testing.assert_close(half[key], 0.5 * full[key])
    for key in constant:
        torch.testing.assert_close(half[key], full[key])


@pytest.mark.parametrize(
    ("name", "part"),
    [("kd", "student/kd"), ("dkd", "student/nckd"), ("sokd", "bridge/kl_teacher")],
)
def test_logit_standardisation_ignores_the_teachers_logit_scale_and_shift(
    name: str, part: str, tiny_params: Params
) -> None:
    # z-scored logits carry only the relations between classes: a teacher whose logits are
    # 3x larger and shifted by 5 teaches exactly the same thing; without it, it does not.
    images, labels = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))

    def part_value(standardise: bool, scale: float, shift: float) -> torch.Tensor:
        torch.manual_seed(0)
        student, teacher = _networks()
        with torch.no_grad():  # the last layer's outputs scaled and shifted
            teacher.fc.weight.mul_(scale)
            teacher.fc.bias.mul_(scale).add_(shift)
        cfg = dataclasses.replace(
            tiny_params.distill.objective(name), logit_standardisation=standardise
        )
        if name == "sokd":  # a bridge copied from the teacher would carry the same scale
            cfg = dataclasses.replace(cfg, bridge_init="random")
        objective = build_objective(name, student, teacher, cfg).eval()
        return objective.step(images, labels, 0.99).parts[part]

    torch.testing.assert_close(part_value(True, 1, 0), part_value(True, 3, 5))
    assert not torch.allclose(part_value(False, 1, 0), part_value(False, 3, 5))


def test_the_lazy_objective_names_are_exactly_what_the_modules_register() -> None:
    # NAMES is written by hand so `--help` needs no torch: it must match the modules, one each.
    import importlib

    from pipeline.objectives import NAMES, OBJECTIVES

    folder = Path(__file__).resolve().parents[1] / "pipeline" / "objectives"
    helpers = {"__init__", "base", "losses", "features"}
    assert sorted(NAMES) == sorted(p.stem for p in folder.glob("*.py") if p.stem not in helpers)
    for name in NAMES:
        importlib.import_module(f"pipeline.objectives.{name}")
    assert sorted(OBJECTIVES._items) == sorted(NAMES)
