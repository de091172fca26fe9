"""The CUDA path: autocast (bf16, fp16 with loss scaling), channels_last, torch.compile, loaders.

Every test here needs a CUDA device and is skipped without one, except under
`python -m benchmarks.gpu_check --cpu-dry-run`, which sets SOKD_CHECK_DEVICE=cpu so the same
tests prove themselves on the CPU (the fp16 ones stay skipped: fp16 is CUDA-only).
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import pytest
import torch

from pipeline.core.config import Params, RuntimeConfig
from pipeline.core.runtime import Runtime, resolve_runtime
from pipeline.data.batches import make_batches
from pipeline.data.datasets import load_prepared
from pipeline.models import create_model
from pipeline.models.checkpoint import load_checkpoint, save_checkpoint
from pipeline.objectives import build_objective
from pipeline.training.engine import build_optimizer, fit, train_step
from pipeline.training.inference import predict

pytestmark = pytest.mark.cuda
CHECK_DEVICE_ENV = "SOKD_CHECK_DEVICE"


@pytest.fixture
def device() -> str:
    """'cuda', or the device the GPU check's dry run names; skips where neither applies."""
    named = os.environ.get(CHECK_DEVICE_ENV)
    if named:
        return named
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return "cuda"


def _runtime(device: str, amp: str, **changes: object) -> Runtime:
    cfg = RuntimeConfig(device, amp, channels_last=True, compile=False, loader="device", workers=0)
    return resolve_runtime(dataclasses.replace(cfg, **changes))


def _needs_fp16(device: str) -> None:
    if not device.startswith("cuda"):
        pytest.skip("fp16 autocast is CUDA-only")


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_sokd_fits_under_autocast_in_channels_last(
    prepared_path: Path, tiny_params: Params, device: str, amp: str
) -> None:
    if amp == "fp16":
        _needs_fp16(device)
    runtime = _runtime(device, amp)
    data = load_prepared(prepared_path, ("train", "val"))
    cfg = tiny_params.distill.train
    train = make_batches(data, "train", cfg.batch_size, cfg.augment, runtime, 0)
    val = make_batches(data, "val", cfg.batch_size, None, runtime, 0)
    objective = build_objective(
        "sokd",
        create_model("resnet8", 10, 1),
        create_model("resnet20", 10, 1),
        tiny_params.distill.objective("sokd"),
    )
    result = fit(objective, train, val, cfg, runtime, "sokd")
    assert all(math.isfinite(row["train/loss"]) for row in result.history)
    assert all(row["memory/peak_mb"] > 0 for row in result.history)
    conv = next(m for m in objective.student.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.device.type == torch.device(device).type
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    # The frozen teacher stays frozen on the device: no gradients, no update.
    assert all(p.grad is None for p in objective.teacher.parameters())


def test_fp16_loss_scaling_skips_an_overflowing_step(
    prepared_path: Path, tiny_params: Params, device: str
) -> None:
    _needs_fp16(device)
    runtime = _runtime(device, "fp16")
    assert runtime.grad_scaler().is_enabled()  # fp16 is loss-scaled, bf16 and fp32 are not
    assert not _runtime(device, "bf16").grad_scaler().is_enabled()
    data = load_prepared(prepared_path, ("train",))
    images, labels = next(iter(make_batches(data, "train", 32, None, runtime, 0)))
    objective = build_objective("vanilla", create_model("resnet8", 10, 1), None, None)
    objective.to(runtime.device, memory_format=torch.channels_last)
    optimizer = build_optimizer(objective, tiny_params.distill.train.optim)
    # A scale of 2^40 overflows fp16 gradients: the scaler must skip the step and halve itself.
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**40)
    before = [p.detach().clone() for p in objective.parameters()]
    train_step(objective.step, optimizer, scaler, images, labels, runtime, 0.0)
    assert scaler.get_scale() == 2.0**39
    assert all(torch.equal(b, p) for b, p in zip(before, objective.parameters(), strict=True))
    for _ in range(3):  # at the default scale the steps go through
        out = train_step(
            objective.step, optimizer, runtime.grad_scaler(), images, labels, runtime, 0.0
        )
    assert math.isfinite(out.loss.item())
    assert any(not torch.equal(b, p) for b, p in zip(before, objective.parameters(), strict=True))


def test_compiled_step_matches_eager_on_the_device(
    prepared_path: Path, tiny_params: Params, device: str
) -> None:
    runtime = _runtime(device, "none")
    data = load_prepared(prepared_path, ("train",))
    images, labels = next(iter(make_batches(data, "train", 16, None, runtime, 0)))
    losses = []
    for compiled in (False, True):
        torch.manual_seed(0)
        objective = build_objective("vanilla", create_model("resnet8", 10, 1), None, None)
        objective.to(runtime.device, memory_format=torch.channels_last)
        if compiled:
            objective.compile_networks()
        optimizer = build_optimizer(objective, tiny_params.distill.train.optim)
        out = train_step(
            objective.step, optimizer, runtime.grad_scaler(), images, labels, runtime, 0.0
        )
        losses.append(out.loss.item())
    # Stated tolerance: cuDNN may pick other convolution algorithms (and TF32) for each graph.
    assert losses[1] == pytest.approx(losses[0], rel=1e-3)


def test_device_and_streamed_loaders_give_the_same_batches_on_the_device(
    prepared_path: Path, device: str
) -> None:
    data = load_prepared(prepared_path, ("val",))
    on_device = make_batches(data, "val", 32, None, _runtime(device, "none"), 0)
    streamed = make_batches(
        data, "val", 32, None, _runtime(device, "none", loader="stream", workers=2), 0
    )
    pairs = list(zip(on_device, streamed, strict=True))
    assert len(pairs) == len(on_device) > 1
    for (a, la), (b, lb) in pairs:
        assert a.device.type == b.device.type == torch.device(device).type
        assert a.is_contiguous(memory_format=torch.channels_last)
        assert b.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        assert torch.equal(la, lb)


def test_a_checkpoint_trained_on_the_device_predicts_the_same_on_the_cpu(
    prepared_path: Path, tiny_params: Params, device: str, tmp_path: Path
) -> None:
    runtime = _runtime(device, "bf16")
    data = load_prepared(prepared_path, ("train", "val"))
    cfg = dataclasses.replace(tiny_params.distill.train, epochs=1)
    train = make_batches(data, "train", cfg.batch_size, cfg.augment, runtime, 0)
    val = make_batches(data, "val", cfg.batch_size, None, runtime, 0)
    objective = build_objective("vanilla", create_model("resnet8", 10, 1), None, None)
    fit(objective, train, val, cfg, runtime, "vanilla")
    path = tmp_path / "student.pt"
    save_checkpoint(
        path, objective.student, arch="resnet8", role="student", data=data, params={}, metrics={}
    )
    fp32 = runtime.fp32()
    on_device = predict(objective.student, make_batches(data, "val", 64, None, fp32, 0), fp32)
    cpu = Runtime(torch.device("cpu"), amp_dtype=None, channels_last=False)
    on_cpu = predict(
        load_checkpoint(path).build(), make_batches(data, "val", 64, None, cpu, 0), cpu
    )
    # Stated tolerance: TF32 convolutions on the GPU against fp32 on the CPU.
    torch.testing.assert_close(on_device, on_cpu, rtol=1e-2, atol=1e-2)
    assert (on_device.argmax(1) == on_cpu.argmax(1)).float().mean() >= 0.98
