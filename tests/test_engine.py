import dataclasses
import pickle
from pathlib import Path

import pytest
import torch

from pipeline.core.config import Params, ScheduleConfig
from pipeline.core.errors import CheckpointError, PipelineError
from pipeline.data.batches import make_batches
from pipeline.data.datasets import load_prepared
from pipeline.models import create_model
from pipeline.models.checkpoint import load_checkpoint, save_checkpoint
from pipeline.objectives import build_objective
from pipeline.training.engine import fit, lr_factor
from pipeline.training.inference import predict
from tests.conftest import CPU, with_changes


def test_cosine_and_step_schedules() -> None:
    cosine = lr_factor(ScheduleConfig("cosine", (), 0.1, 0), epochs=4, steps_per_epoch=10)
    assert (
        cosine(0) == 1.0 and cosine(20) == pytest.approx(0.5) and cosine(40) == pytest.approx(0.0)
    )
    step = lr_factor(ScheduleConfig("step", (2, 3), 0.1, 0), epochs=4, steps_per_epoch=10)
    assert [step(s) for s in (0, 19, 20, 30, 39)] == pytest.approx([1, 1, 0.1, 0.01, 0.01])
    warm = lr_factor(ScheduleConfig("cosine", (), 0.1, 1), epochs=4, steps_per_epoch=10)
    assert warm(0) == pytest.approx(0.1) and warm(5) == pytest.approx(0.55) and warm(10) == 1.0


def test_fit_lowers_the_loss_and_reports_every_epoch(
    prepared_path: Path, tiny_params: Params
) -> None:
    data = load_prepared(prepared_path, ("train", "val"))
    cfg = with_changes(tiny_params.train_teacher, "train", epochs=3).train
    train = make_batches(data, "train", cfg.batch_size, cfg.augment, CPU, 0)
    val = make_batches(data, "val", cfg.batch_size, None, CPU, 0)
    objective = build_objective("vanilla", create_model("resnet8", 10, 1), None, None)
    result = fit(objective, train, val, cfg, CPU, "test")
    losses = [row["train/loss"] for row in result.history]
    assert len(result.history) == 3 and losses[-1] < losses[0]
    expected = {
        "epoch",
        "lr",
        "train/loss",
        "train/student/ce",
        "memory/peak_mb",
        "train/top1",
        "val/top1",
        "val/loss",
        "time/epoch_s",
        "time/images_per_s",
    }
    assert set(result.history[0]) == expected
    assert result.best_val_top1 == max(row["val/top1"] for row in result.history)


def test_epoch_fraction_shortens_each_epoch_and_its_schedule(
    prepared_path: Path, tiny_params: Params
) -> None:
    data = load_prepared(prepared_path, ("train", "val"))
    base = with_changes(tiny_params.train_teacher, "train", epochs=2, batch_size=8).train
    train = make_batches(data, "train", base.batch_size, base.augment, CPU, 0)
    assert len(train) > 3  # a full pass takes more steps than the 3 asked for
    cfg = dataclasses.replace(base, epoch_fraction=3 / len(train))
    val = make_batches(data, "val", cfg.batch_size, None, CPU, 0)
    objective = build_objective("vanilla", create_model("resnet8", 10, 1), None, None)
    seen: list[int] = []
    step = objective.step
    objective.step = lambda images, labels, progress: (
        seen.append(len(labels)) or step(images, labels, progress)
    )
    result = fit(objective, train, val, cfg, CPU, "test")
    assert seen == [8] * 6  # 2 epochs x 3 steps
    # The cosine spans the 6 steps: the second epoch starts half-way down it.
    first, second = (row["lr"] for row in result.history)
    assert second == pytest.approx(first * 0.5)
    assert all(0 <= row["train/top1"] <= 1 for row in result.history)


def test_fit_is_reproducible_with_the_same_seed(prepared_path: Path, tiny_params: Params) -> None:
    data = load_prepared(prepared_path, ("train", "val"))
    cfg = with_changes(tiny_params.train_teacher, "train", epochs=1).train
    logits = []
    for _ in range(2):
        torch.manual_seed(0)
        model = create_model("resnet8", 10, 1)
        train = make_batches(data, "train", cfg.batch_size, cfg.augment, CPU, 0)
        val = make_batches(data, "val", cfg.batch_size, None, CPU, 0)
        fit(build_objective("vanilla", model, None, None), train, val, cfg, CPU, "test")
        logits.append(predict(model, val, CPU))
    torch.testing.assert_close(logits[0], logits[1], rtol=0, atol=0)


def test_a_diverging_run_stops_within_a_bounded_number_of_steps(
    prepared_path: Path, tiny_params: Params
) -> None:
    from pipeline.training.engine import DIVERGENCE_CHECK_STEPS

    data = load_prepared(prepared_path, ("train", "val"))
    train_cfg = tiny_params.train_teacher.train
    optim = dataclasses.replace(train_cfg.optim, lr=1000.0)
    cfg = dataclasses.replace(train_cfg, epochs=1, batch_size=4, optim=optim)
    train = make_batches(data, "train", cfg.batch_size, cfg.augment, CPU, 0)
    assert len(train) > 2 * DIVERGENCE_CHECK_STEPS  # the epoch is far longer than the bound
    val = make_batches(data, "val", cfg.batch_size, None, CPU, 0)
    objective = build_objective("vanilla", create_model("resnet8", 10, 1), None, None)
    message = f"loss became NaN or infinite by step {DIVERGENCE_CHECK_STEPS} of epoch 1"
    with pytest.raises(PipelineError, match=message):
        fit(objective, train, val, cfg, CPU, "test")


def _saved(tmp_path: Path, prepared_path: Path) -> tuple[Path, torch.nn.Module]:
    data = load_prepared(prepared_path, ("val",))
    model = create_model("resnet8", 10, 1).eval()
    path = tmp_path / "student.pt"
    save_checkpoint(
        path,
        model,
        arch="resnet8",
        role="student",
        data=data,
        params={"lr": 0.1},
        metrics={"val/top1": 0.5},
    )
    return path, model


def test_checkpoint_round_trip_gives_identical_logits(tmp_path: Path, prepared_path: Path) -> None:
    path, model = _saved(tmp_path, prepared_path)
    ckpt = load_checkpoint(path)
    assert (ckpt.arch, ckpt.role, ckpt.num_classes, ckpt.in_channels) == (
        "resnet8",
        "student",
        10,
        1,
    )
    assert ckpt.classes[0] == "T-shirt/top" and ckpt.params == {"lr": 0.1}
    images = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(ckpt.build()(images), model(images), rtol=0, atol=0)


def test_missing_and_truncated_checkpoints_fail_clearly(
    tmp_path: Path, prepared_path: Path
) -> None:
    path, _ = _saved(tmp_path, prepared_path)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "absent.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="damaged or not a checkpoint"):
        load_checkpoint(truncated)


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path("PWNED"),))


def test_a_pickle_that_would_run_code_is_refused_not_executed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pt"
    torch.save({"format": "sokd-checkpoint/1", "arch": _Payload()}, evil, pickle_module=pickle)
    with pytest.raises(CheckpointError, match=r"never unpickled here \(it could run code\)"):
        load_checkpoint(evil)
    assert not (tmp_path / "PWNED").exists()


def test_weights_of_another_architecture_are_refused(tmp_path: Path, prepared_path: Path) -> None:
    data = load_prepared(prepared_path, ("val",))
    path = tmp_path / "wrong.pt"
    save_checkpoint(
        path,
        create_model("resnet20", 10, 1),
        arch="resnet8",
        role="student",
        data=data,
        params={},
        metrics={},
    )
    with pytest.raises(CheckpointError, match="weights do not fit architecture 'resnet8'"):
        load_checkpoint(path).build()


def test_fp16_on_a_cpu_is_refused_in_one_line() -> None:
    from pipeline.core.config import RuntimeConfig
    from pipeline.core.errors import ConfigError
    from pipeline.core.runtime import resolve_runtime

    cfg = RuntimeConfig(
        "cpu", "fp16", channels_last=False, compile=False, loader="device", workers=0
    )
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        resolve_runtime(cfg)


def test_compiled_training_gives_the_same_first_step_as_eager(
    prepared_path: Path, tiny_params: Params
) -> None:
    import dataclasses

    from pipeline.training.engine import build_optimizer, train_step

    data = load_prepared(prepared_path, ("train",))
    images, labels = next(iter(make_batches(data, "train", 16, None, CPU, 0)))
    losses = []
    for runtime in (CPU, dataclasses.replace(CPU, compile=True)):
        torch.manual_seed(0)
        objective = build_objective("vanilla", create_model("resnet8", 10, 1), None, None)
        if runtime.compile:
            objective.compile_networks()
        optimizer = build_optimizer(objective, tiny_params.distill.train.optim)
        out = train_step(
            objective.step, optimizer, runtime.grad_scaler(), images, labels, runtime, 0.0
        )
        losses.append(out.loss.item())
        keys = set(objective.deployable().state_dict())
        assert not any("_orig_mod" in k for k in keys)  # checkpoints keep plain names
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
