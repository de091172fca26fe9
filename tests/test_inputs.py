"""What a network reads: random-resized crops, evaluation resize + centre crop, both loaders,
BatchNorm re-estimation, the near-chance warning, and the spec carried to ONNX and the card."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest
import torch

from pipeline.core.config import AugmentConfig, Params, TrainConfig
from pipeline.core.inputs import InputSpec
from pipeline.data.batches import make_batches, random_resized_crop, resize_and_crop
from pipeline.data.datasets import Prepared, Split, load_prepared
from pipeline.models import create_model
from pipeline.training.batchnorm import near_chance, recalibrate
from pipeline.training.runs import run_spec
from tests.conftest import CPU


def _gradient_images(n: int, h: int, w: int) -> torch.Tensor:
    """uint8 RGB images whose pixel value encodes its column: crops and flips are visible."""
    cols = torch.linspace(0, 255, w).round().to(torch.uint8)
    return cols.view(1, 1, 1, w).expand(n, 3, h, w).contiguous()


def test_random_resized_crop_is_seeded_and_lands_at_the_input_size() -> None:
    x = _gradient_images(8, 40, 60).float() / 255
    outs = [
        random_resized_crop(x, (24, 24), (0.2, 1.0), (0.75, 1.33), "bilinear",
                            torch.Generator().manual_seed(0))
        for _ in range(2)
    ]  # fmt: skip
    assert outs[0].shape == (8, 3, 24, 24)
    torch.testing.assert_close(outs[0], outs[1])
    # Each image is a different box: the left edges differ from image to image.
    assert outs[0][:, 0, 0, 0].unique().numel() > 1
    assert outs[0].min() >= 0 and outs[0].max() <= 1


def test_evaluation_resizes_the_shorter_side_and_crops_the_centre() -> None:
    x = _gradient_images(2, 40, 80).float() / 255
    spec = InputSpec((0.5,) * 3, (0.25,) * 3, (28, 28), resize=32)
    out = resize_and_crop(x, spec)
    assert out.shape == (2, 3, 28, 28)
    # Resized to 32x64, the centre 28 columns span the middle of the gradient.
    mid = out[0, 0, 0, 14].item()
    assert 0.45 < mid < 0.55


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
@pytest.mark.parametrize(
    ("h", "w", "resize", "crop"),
    [(40, 81, 33, 28), (77, 50, 37, 31), (64, 64, 0, 48), (35, 61, 0, 28)],
)
def test_the_evaluation_geometry_is_torchvisions_bit_for_bit(
    interpolation: str, h: int, w: int, resize: int, crop: int
) -> None:
    from torchvision.transforms import v2
    from torchvision.transforms.v2 import functional as TF

    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(h * w))
    spec = InputSpec((0.5,) * 3, (0.25,) * 3, (crop, crop), resize, interpolation)
    mode = v2.InterpolationMode(interpolation)
    if resize:  # the shorter side to `resize` (the longer truncated), then the centre crop
        ours = resize_and_crop(x.clone(), spec)
        theirs = TF.center_crop(TF.resize(x, [resize], mode, antialias=True), [crop, crop])
    else:  # a plain resize to the input size
        ours = resize_and_crop(x.clone(), spec)
        theirs = TF.resize(x, [crop, crop], mode, antialias=True)
    # Bicubic overshoots [0, 1]; the evaluation path clamps it back to what an image can hold.
    assert torch.equal(ours, theirs.clamp(0, 1))


def _data(n: int = 24, h: int = 40, w: int = 40) -> Prepared:
    images = _gradient_images(n, h, w)
    labels = torch.arange(n) % 3
    return Prepared("t", ("a", "b", "c"), (0.5,) * 3, (0.25,) * 3, {"val": Split(images, labels)})


def test_both_loaders_read_a_spec_the_same_way() -> None:
    spec = InputSpec((0.5,) * 3, (0.25,) * 3, (24, 24), resize=28)
    runtime = dataclasses.replace(CPU, loader="device")
    streamed = dataclasses.replace(CPU, loader="stream", workers=0)
    a = torch.cat([x for x, _ in make_batches(_data(), "val", 8, None, runtime, 0, spec)])
    b = torch.cat([x for x, _ in make_batches(_data(), "val", 8, None, streamed, 0, spec)])
    assert a.shape == b.shape == (24, 3, 24, 24)
    # Batch-wise tensors and per-image PIL resize differ only by interpolation rounding.
    assert (a - b).abs().mean() < 0.05


def test_random_resized_crop_training_batches_have_the_input_size() -> None:
    data = dataclasses.replace(_data(), splits={"train": _data().splits["val"]})
    augment = AugmentConfig(kind="random_resized_crop", scale=(0.3, 1.0))
    spec = InputSpec((0.5,) * 3, (0.25,) * 3, (32, 32), resize=36)
    for stream in (False, True):
        runtime = dataclasses.replace(CPU, loader="stream" if stream else "device")
        images, _ = next(iter(make_batches(data, "train", 8, augment, runtime, 0, spec)))
        assert images.shape == (8, 3, 32, 32)


def test_pretrained_weights_decide_normalisation_and_size() -> None:
    data = _data()
    train = TrainConfig()
    imagenet = InputSpec(
        (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), (224, 224), 256, "bicubic", "timm"
    )
    spec = run_spec(data, train, imagenet, None)
    assert spec.mean == imagenet.mean and spec.size == (224, 224) and spec.resize == 256
    assert spec.interpolation == "bicubic" and spec.source == "timm"
    # Distilling: the student reads the teacher's batch size; its own weights' statistics.
    student = run_spec(data, train, imagenet, InputSpec((0.5,), (0.2,), (40, 40)))
    assert student.size == (40, 40) and student.mean == imagenet.mean
    # No weights, small images: the data's statistics, as they are.
    plain = run_spec(data, train, None, None)
    assert plain.mean == data.mean and plain.size == (40, 40) and plain.resize == 0
    sized = run_spec(data, dataclasses.replace(train, input_size=32), None, None)
    assert sized.size == (32, 32)


def test_batchnorm_reestimation_changes_statistics_and_no_weight(
    prepared_path: Path, tiny_params: Params
) -> None:
    data = load_prepared(prepared_path, ("train",))
    model = create_model("resnet8", 10, 1)
    weights = {k: v.clone() for k, v in model.named_parameters()}
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    recalibrate(model, data, data.input_spec(), 64, 32, CPU, seed=0)
    for key, value in model.named_parameters():
        torch.testing.assert_close(value, weights[key], rtol=0, atol=0)
    changed = [
        k for k, v in model.state_dict().items() if "running" in k and not torch.equal(v, stats[k])
    ]
    assert len(changed) == len(stats)
    momenta = {m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert momenta == {0.1}  # restored after the cumulative pass


def test_near_chance_is_said_in_one_line_with_the_cause(caplog: pytest.LogCaptureFixture) -> None:
    assert near_chance(0.101, 0.62, 10) is not None
    line = near_chance(0.101, 0.62, 10)
    assert "near chance (10.0%)" in line and "BatchNorm running statistics" in line
    assert "\n" not in line
    assert near_chance(0.55, 0.62, 10) is None  # a fair gap is not chance
    assert near_chance(0.11, 0.12, 10) is None  # nothing learnt at all is not an eval-mode problem


def test_a_first_epoch_worse_than_chance_is_named_with_its_fix() -> None:
    from pipeline.training.runs import diverged_early

    line = diverged_early(4.6, 10)  # torchvision's MobileNetV2 from scratch at lr 0.1
    assert "far above chance level (ln 10 = 2.30)" in line and "train.optim.lr" in line
    assert "warmup_epochs" in line and "\n" not in line
    # timm's MobileNetV3 at lr 0.05 with a warm-up: its untrained logits, not instability
    assert diverged_early(3.2, 10) is None and diverged_early(None, 10) is None


def test_a_stale_batchnorm_student_triggers_the_warning(
    prepared_path: Path, tiny_params: Params, caplog: pytest.LogCaptureFixture
) -> None:
    """Constructed case: running statistics far from the data's, no re-estimation."""
    from pipeline.objectives import build_objective
    from pipeline.training.runs import Extras, fit_and_measure

    data = load_prepared(prepared_path, ("train", "val"))
    model = create_model("resnet8", 10, 1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.0  # the running statistics never follow the weights
            m.running_mean.fill_(50.0)
    train = dataclasses.replace(tiny_params.distill.train, epochs=3, bn_recalibration_images=0)
    objective = build_objective("vanilla", model, None, None)
    with caplog.at_level(logging.WARNING, logger="pipeline.training.runs"):
        result, metrics = fit_and_measure(
            "stale", objective, data, train, CPU, 0, Extras(), None, data.input_spec()
        )
    assert result.history[-1]["train/top1"] > 0.3
    assert metrics["val/top1_final"] <= 0.15
    assert any("near chance" in r.message for r in caplog.records)


def test_the_spec_reaches_the_onnx_metadata_and_the_card(
    prepared_path: Path, tiny_params: Params, tmp_path: Path
) -> None:
    import onnx

    from pipeline.models.checkpoint import load_checkpoint, save_checkpoint
    from pipeline.shipping.onnx import export_onnx

    data = load_prepared(prepared_path, ("train",))
    spec = InputSpec((0.4,), (0.3,), (24, 24), resize=28, interpolation="bicubic", source="timm x")
    save_checkpoint(tmp_path / "s.pt", create_model("resnet8", 10, 1), arch="resnet8",
                    role="student", data=data, params={}, metrics={}, spec=spec)  # fmt: skip
    ckpt = load_checkpoint(tmp_path / "s.pt")
    assert ckpt.spec == spec
    export_onnx(ckpt, tmp_path / "s.onnx", tiny_params.export)
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "s.onnx")).metadata_props}
    assert InputSpec.from_dict(json.loads(meta["input_spec"])) == spec
    assert "shorter side to 28 (bicubic), centre-crop 24x24" in meta["preprocessing"]
    assert json.loads(meta["mean"]) == [0.4]


def test_the_figures_around_batchnorm_reestimation_are_each_networks_own(
    prepared_path: Path, tiny_params: Params
) -> None:
    """No validation pass is repeated after training, and no figure is borrowed wrongly: each
    recorded val top-1 equals a fresh pass of the network it names, as saved."""
    from pipeline.data.batches import make_batches
    from pipeline.objectives import build_objective
    from pipeline.training.inference import predict, topk_accuracy
    from pipeline.training.runs import Extras, fit_and_measure

    data = load_prepared(prepared_path, ("train", "val"))
    torch.manual_seed(0)
    teacher, student = create_model("resnet20", 10, 1), create_model("resnet8", 10, 1)
    train = dataclasses.replace(tiny_params.distill.train, epochs=1, bn_recalibration_images=64)
    objective = build_objective("sokd", student, teacher, tiny_params.distill.objective("sokd"))
    spec = data.input_spec()
    result, metrics = fit_and_measure("sokd", objective, data, train, CPU, 0, Extras(), None, spec)
    assert metrics["bn/student/val_top1_before"] == result.last_val_top1
    val = make_batches(data, "val", train.batch_size, None, CPU, 0, spec)
    improved = objective.extra_networks()["improved_teacher"].network
    for network, key, after in (
        (objective.deployable(), "val/top1_final", "bn/student/val_top1_after"),
        (improved, "improved_teacher/val_top1", "bn/improved_teacher/val_top1_after"),
    ):
        fresh = topk_accuracy(predict(network, val, CPU), val.labels, 1)
        assert metrics[key] == metrics[after] == fresh


def test_the_side_before_the_crop_is_floored_as_timm_does() -> None:
    from pipeline.core.inputs import scale_size

    assert scale_size(224, 0.875) == 256 and scale_size(224, 224 / 256) == 256
    assert scale_size(224, 0.95) == 235  # timm: math.floor(224 / 0.95) = floor(235.79)
    assert scale_size(48, 0.875) == 54  # not 55, as rounding gave
