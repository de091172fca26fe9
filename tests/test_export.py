import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from pipeline.core.config import GateConfig, Params, VerifyConfig
from pipeline.core.errors import ModelFileError
from pipeline.data.batches import make_batches, resize_and_crop
from pipeline.data.datasets import Split, load_prepared
from pipeline.models import create_model
from pipeline.models.checkpoint import load_checkpoint, save_checkpoint
from pipeline.shipping.engines import from_uint8
from pipeline.shipping.int8 import calibration_batches, quantize_int8
from pipeline.shipping.onnx import export_onnx
from pipeline.shipping.verification import verify
from tests.conftest import CPU, ROOT, with_changes


@pytest.fixture(scope="module")
def student_ckpt(prepared_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = load_prepared(prepared_path, ("train", "val"))
    torch.manual_seed(0)  # module fixtures run before the per-test seeding
    model = create_model("resnet8", 10, 1)
    # A few steps of training: predictions that differ between images, BatchNorm statistics
    # that are not the defaults, so that INT8 and ONNX have something to get wrong.
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for images, labels in make_batches(data, "train", 50, None, CPU, seed=0):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        opt.step()
    path = tmp_path_factory.mktemp("ckpt") / "student.pt"
    save_checkpoint(
        path, model.eval(), arch="resnet8", role="student", data=data, params={}, metrics={}
    )
    return path


@pytest.fixture(scope="module")
def exported(
    student_ckpt: Path, tiny_params: Params, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "student.onnx"
    export_onnx(load_checkpoint(student_ckpt), out, tiny_params.export)
    return out


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
@pytest.mark.parametrize("kind", ["uint8", "float"])
def test_export_matches_torch_at_any_batch_size(
    student_ckpt: Path, tiny_params: Params, tmp_path: Path, exporter: str, kind: str
) -> None:
    cfg = dataclasses.replace(
        tiny_params.export, exporter=exporter, opset=18 if exporter == "dynamo" else 17, input=kind
    )
    out = tmp_path / "student.onnx"
    ckpt = load_checkpoint(student_ckpt)
    report = export_onnx(ckpt, out, cfg)
    assert report["onnx/file_bytes"] == out.stat().st_size
    assert [p.name for p in tmp_path.iterdir()] == ["student.onnx"]  # self-contained, no sidecar
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (images_input,) = session.get_inputs()
    assert images_input.name == "images"
    assert [o.name for o in session.get_outputs()] == ["logits"]
    model = ckpt.build()
    rng = np.random.default_rng(0)
    for batch in (1, 7, 64):
        if kind == "uint8":  # raw pixels, (N, H, W, C); the file normalises them itself
            assert images_input.type == "tensor(uint8)" and images_input.shape[1:] == [28, 28, 1]
            feed = rng.integers(0, 256, (batch, 28, 28, 1), dtype=np.uint8)
            x = torch.from_numpy(from_uint8(feed, ckpt.mean, ckpt.std))
        else:
            assert images_input.type == "tensor(float)" and images_input.shape[1:] == [1, 28, 28]
            x = torch.randn(batch, 1, 28, 28)
            feed = x.numpy()
        onnx_logits = session.run(None, {"images": feed})[0]
        assert onnx_logits.shape == (batch, 10)
        np.testing.assert_allclose(onnx_logits, model(x).detach().numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
@pytest.mark.parametrize("resize", [0, 32])
def test_an_any_size_file_fits_images_as_the_evaluation_path_does(
    student_ckpt: Path, tiny_params: Params, tmp_path: Path, interpolation: str, resize: int
) -> None:
    """`uint8_any_size`: images of any size in, the evaluation resize and crop done in the graph;
    its logits equal torch's on `resize_and_crop` within the gate's logit tolerance."""
    ckpt = dataclasses.replace(
        load_checkpoint(student_ckpt), resize=resize, interpolation=interpolation
    )
    out = tmp_path / "student.onnx"
    export_onnx(ckpt, out, dataclasses.replace(tiny_params.export, input="uint8_any_size"))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (images_input,) = session.get_inputs()
    assert images_input.type == "tensor(uint8)" and images_input.shape[1:] == [
        "height", "width", 1
    ]  # fmt: skip
    assert "of any size" in session.get_modelmeta().custom_metadata_map["preprocessing"]
    model, rng = ckpt.build(), np.random.default_rng(resize)
    tolerance = tiny_params.verify.onnx.max_abs_logit_diff
    for h, w in ((28, 28), (40, 33), (21, 61), (32, 32)):
        pixels = rng.integers(0, 256, (3, 1, h, w), dtype=np.uint8)
        fitted = resize_and_crop(torch.from_numpy(pixels).float() / 255, ckpt.spec)
        expected = model((fitted - ckpt.mean[0]) / ckpt.std[0]).detach().numpy()
        logits = session.run(None, {"images": pixels.transpose(0, 2, 3, 1).copy()})[0]
        assert np.abs(logits - expected).max() < tolerance, (h, w)


def test_an_any_size_file_is_quantized_verified_and_deployed_from_stored_images(
    student_ckpt: Path, prepared_path: Path, tiny_params: Params, tmp_path: Path
) -> None:
    """quantize calibrates and validates it on the stored images, verify holds it to the gate
    against torch's evaluation path, and load_student feeds each image file at its own size."""
    from PIL import Image

    from pipeline.shipping.deploy import load_student

    ckpt = dataclasses.replace(load_checkpoint(student_ckpt), resize=32)
    fp32, int8 = tmp_path / "student.onnx", tmp_path / "student.int8.onnx"
    export_onnx(ckpt, fp32, dataclasses.replace(tiny_params.export, input="uint8_any_size"))
    data = load_prepared(prepared_path, ("train", "val", "test"))
    quantize_int8(fp32, int8, data, tiny_params.quantize, tiny_params.verify.int8, seed=0)
    report = verify(ckpt, [fp32, int8], data, tiny_params.verify)[0]
    assert report["gate/passed"] is True, report["gate/failures"]
    assert report["onnx/max_abs_logit_diff"] < tiny_params.verify.onnx.max_abs_logit_diff
    # Quantized nodes behind a geometry that stays fp32.
    ops = [n.op_type for n in onnx.load(str(int8)).graph.node]
    assert "QLinearConv" in ops and "Resize" in ops
    model, pixels = ckpt.build(), data.splits["test"].images[:4].numpy()
    files = []
    for k, (h, w) in enumerate(((28, 28), (45, 30), (30, 52), (64, 64))):
        image = Image.fromarray(pixels[k, 0]).resize((w, h), Image.BILINEAR)
        files.append(tmp_path / f"{k}.png")
        image.save(files[-1])
    decoded = [np.asarray(Image.open(f))[None, None] for f in files]
    fitted = [resize_and_crop(torch.from_numpy(d).float() / 255, ckpt.spec) for d in decoded]
    x = (torch.cat(fitted) - ckpt.mean[0]) / ckpt.std[0]
    expected = [ckpt.classes[i] for i in model(x).argmax(1).tolist()]
    for path in (fp32, int8):
        rows = load_student(path).predict_files(files)
        if path == fp32:  # the same network: the same labels
            assert [r.top[0][0] for r in rows] == expected
        assert len(rows) == 4 and all(0 < r.top[0][1] <= 1 for r in rows)


def test_export_records_provenance(exported: Path, student_ckpt: Path) -> None:
    meta = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"]).get_modelmeta()
    from pipeline.core.files import sha256_file

    assert meta.custom_metadata_map["checkpoint_sha256"] == sha256_file(student_ckpt)
    assert meta.custom_metadata_map["arch"] == "resnet8"


@pytest.fixture(scope="module")
def quantized(exported: Path, prepared_path: Path, tiny_params: Params) -> Path:
    out = exported.with_name("student.int8.onnx")
    data = load_prepared(prepared_path, ("train", "val"))
    quantize_int8(exported, out, data, tiny_params.quantize, tiny_params.verify.int8, seed=0)
    return out


def _verify(fp32: Path, int8: Path, ckpt: Path, prepared_path: Path, cfg: VerifyConfig) -> dict:
    test = load_prepared(prepared_path, ("test",))
    return verify(load_checkpoint(ckpt), [fp32, int8], test, cfg)[0]


def test_verify_passes_on_the_exported_student(
    exported: Path, quantized: Path, student_ckpt: Path, prepared_path: Path, tiny_params: Params
) -> None:
    report = _verify(exported, quantized, student_ckpt, prepared_path, tiny_params.verify)
    assert report["gate/passed"] is True and report["gate/failures"] == ""
    assert report["onnx/agreement"] == 1.0 and report["onnx/max_abs_logit_diff"] < 1e-4
    assert report["onnx/top1"] == pytest.approx(report["torch/top1"])
    assert report["test/images"] == 120
    assert report["int8/size_ratio"] > 3  # int8 weights: a quarter of the bytes, plus scales


def test_verify_reports_a_missed_threshold(
    exported: Path, quantized: Path, student_ckpt: Path, prepared_path: Path, tiny_params: Params
) -> None:
    cfg = with_changes(tiny_params, "verify", min_top1=1.0).verify
    report = _verify(exported, quantized, student_ckpt, prepared_path, cfg)
    assert report["gate/passed"] is False and "min_top1" in report["gate/failures"]


def test_verify_fails_an_int8_file_calibrated_on_the_wrong_images(
    exported: Path, quantized: Path, student_ckpt: Path, prepared_path: Path, tiny_params: Params
) -> None:
    data = load_prepared(prepared_path, ("train", "val"))
    train = data.splits["train"]
    blank = Split(torch.zeros_like(train.images), train.labels)  # black images only
    badly_calibrated = exported.with_name("student.badcal.int8.onnx")
    sample = dataclasses.replace(data, splits={"train": blank, "val": data.splits["val"]})
    any_int8 = GateConfig(max_top1_drop=1.0, min_agreement=0.0)  # plain INT8, no fallback
    quantize_int8(exported, badly_calibrated, sample, tiny_params.quantize, any_int8, seed=0)
    # The gate set at what the properly calibrated file reaches passes it and fails the other.
    good = _verify(exported, quantized, student_ckpt, prepared_path, tiny_params.verify)
    gate = GateConfig(tiny_params.verify.int8.max_top1_drop, good["int8/agreement"])
    cfg = with_changes(tiny_params, "verify", int8=gate).verify
    assert _verify(exported, quantized, student_ckpt, prepared_path, cfg)["gate/passed"] is True
    bad = _verify(exported, badly_calibrated, student_ckpt, prepared_path, cfg)
    assert bad["gate/passed"] is False and "verify.int8.min_agreement" in bad["gate/failures"]


@pytest.mark.parametrize("which", ["fp32", "int8"])
@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing"])
def test_verify_rejects_a_damaged_onnx_file(
    exported: Path,
    quantized: Path,
    student_ckpt: Path,
    prepared_path: Path,
    tiny_params: Params,
    tmp_path: Path,
    damage: str,
    which: str,
) -> None:
    good = exported if which == "fp32" else quantized
    broken = tmp_path / good.name
    if damage == "truncate":
        broken.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    elif damage == "garbage":
        broken.write_bytes(b"\x08\x07" + bytes(range(256)) * 4)
    files = (broken, quantized) if which == "fp32" else (exported, broken)
    with pytest.raises(
        ModelFileError, match="not a readable ONNX file" if damage != "missing" else "not found"
    ):
        _verify(*files, student_ckpt, prepared_path, tiny_params.verify)


def test_verify_rejects_onnx_from_another_checkpoint(
    exported: Path, quantized: Path, prepared_path: Path, tmp_path: Path, tiny_params: Params
) -> None:
    data = load_prepared(prepared_path, ("val",))
    other = tmp_path / "other.pt"
    save_checkpoint(
        other,
        create_model("resnet8", 10, 1).eval(),
        arch="resnet8",
        role="student",
        data=data,
        params={},
        metrics={},
    )
    with pytest.raises(ModelFileError, match=r"produced from a different other\.pt"):
        _verify(exported, quantized, other, prepared_path, tiny_params.verify)


def test_verify_rejects_int8_quantized_from_another_onnx_file(
    exported: Path,
    quantized: Path,
    student_ckpt: Path,
    prepared_path: Path,
    tmp_path: Path,
    tiny_params: Params,
) -> None:
    # Same checkpoint, exported again with the other exporter: a different fp32 file.
    other = tmp_path / "student.onnx"
    cfg = dataclasses.replace(tiny_params.export, exporter="torchscript", opset=17)
    export_onnx(load_checkpoint(student_ckpt), other, cfg)
    with pytest.raises(ModelFileError, match=r"produced from a different student\.onnx"):
        _verify(other, quantized, student_ckpt, prepared_path, tiny_params.verify)


def test_verify_needs_each_files_source_and_one_file_per_target(
    exported: Path, quantized: Path, student_ckpt: Path, prepared_path: Path, tiny_params: Params
) -> None:
    ckpt, test = load_checkpoint(student_ckpt), load_prepared(prepared_path, ("test",))
    with pytest.raises(
        ModelFileError, match=r"built from the onnx target.s file; list that file too"
    ):
        verify(ckpt, [quantized], test, tiny_params.verify)
    with pytest.raises(ModelFileError, match=r"are both onnx"):
        verify(ckpt, [exported, exported], test, tiny_params.verify)
    # Each file names its target: the order of the list does not matter.
    report, engines = verify(ckpt, [quantized, exported], test, tiny_params.verify)
    assert set(engines) == {"onnx", "int8"} and report["gate/passed"] is True


def test_verify_rejects_an_input_signature_that_does_not_fit_the_data(
    student_ckpt: Path, prepared_path: Path, tmp_path: Path, tiny_params: Params
) -> None:
    # A student for 3-channel 32x32 images, checked against 1-channel 28x28 data.
    ckpt = load_checkpoint(student_ckpt)
    rgb = dataclasses.replace(
        ckpt,
        in_channels=3,
        image_size=(32, 32),
        state_dict=create_model("resnet8", 10, 3).state_dict(),
    )
    out = tmp_path / "rgb.onnx"
    export_onnx(rgb, out, tiny_params.export)
    with pytest.raises(ModelFileError, match=r"reads 3-channel images, the data has 1"):
        verify(rgb, [out], load_prepared(prepared_path, ("test",)), tiny_params.verify)
    # The 1-channel 28x28 checkpoint against the 3-channel 32x32 file.
    with pytest.raises(
        ModelFileError, match=r"expects input shape .*the checkpoint reads \[batch, 28, 28, 1\]"
    ):
        verify(ckpt, [out], load_prepared(prepared_path, ("test",)), tiny_params.verify)


def test_int8_model_runs_at_any_batch_size_and_tracks_fp32(
    exported: Path, quantized: Path, student_ckpt: Path
) -> None:
    fp32 = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    int8 = ort.InferenceSession(str(quantized), providers=["CPUExecutionProvider"])
    nodes = onnx.load(str(quantized)).graph.node
    assert any(n.op_type in ("QuantizeLinear", "QLinearConv") for n in nodes)
    # The normalising nodes in front stay fp32: 8-bit steps there would round the image itself.
    assert [n.op_type for n in nodes if n.name.startswith("preprocess/")] == [
        "Cast", "Transpose", "Mul", "Add"
    ]  # fmt: skip
    for batch in (1, 7, 64):
        images = np.random.default_rng(batch).integers(0, 256, (batch, 28, 28, 1), dtype=np.uint8)
        a = fp32.run(None, {"images": images})[0]
        b = int8.run(None, {"images": images})[0]
        assert b.shape == (batch, 10)
        assert np.abs(a - b).max() < 0.25 * np.abs(a).max() + 0.1  # close, not equal: int8 rounding
    meta = int8.get_modelmeta().custom_metadata_map
    from pipeline.core.files import sha256_file

    assert meta["source_onnx_sha256"] == sha256_file(exported)
    assert meta["checkpoint_sha256"] == sha256_file(student_ckpt)


def test_calibration_uses_a_fixed_sample_of_training_images(
    prepared_path: Path, tiny_params: Params
) -> None:
    data = load_prepared(prepared_path, ("train",))
    first = np.concatenate(list(calibration_batches(data, tiny_params.quantize, seed=0)))
    again = np.concatenate(list(calibration_batches(data, tiny_params.quantize, seed=0)))
    other = np.concatenate(list(calibration_batches(data, tiny_params.quantize, seed=1)))
    assert first.shape[0] == tiny_params.quantize.calibration_images
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_int8_speed_benchmark_times_both_files_and_splits_time_by_operator(
    exported: Path, quantized: Path, tmp_path: Path
) -> None:
    out = tmp_path / "int8_speed.json"
    command = [sys.executable, "-m", "benchmarks.int8_speed", "--fp32", str(exported)]
    command += ["--int8", str(quantized), "--threads", "1", "--rounds", "2", "--out", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert [(r["threads"], r["batch"]) for r in report["rows"]] == [(1, 1), (1, 64)]
    operators = report["operator_ms_batch64_1thread"]
    assert "Conv" in operators["fp32"] and "QLinearConv" not in operators["fp32"]
    assert "QLinearConv" in operators["int8"]  # the convolutions really run in integers


def test_load_student_gives_the_pipelines_logits_from_a_checkpoint_or_onnx(
    student_ckpt: Path, exported: Path, prepared_path: Path
) -> None:
    from pipeline.shipping.deploy import load_student
    from pipeline.training.inference import predict

    data = load_prepared(prepared_path, ("test",))
    batches = make_batches(data, "test", 64, None, CPU, seed=0)
    expected = predict(load_checkpoint(str(student_ckpt)).build(), batches, CPU).numpy()
    raw = data.splits["test"].images.numpy()  # uint8 (N, C, H, W), as a user has them
    for path in (student_ckpt, str(exported)):
        student = load_student(path)
        assert student.input_shape == (1, 28, 28) and len(student.classes) == 10
        np.testing.assert_allclose(student.logits(raw), expected, atol=1e-4, rtol=1e-4)
        assert student.predict(raw[:3]) == [student.classes[i] for i in expected[:3].argmax(1)]
    with pytest.raises(ValueError, match=r"expected uint8 images of shape \(N, 1, H, W\)"):
        load_student(exported).logits(np.zeros((2, 3, 32, 32), np.uint8))
    # Another size is resized to the student's input first, as evaluation does.
    assert load_student(exported).logits(np.zeros((2, 1, 40, 40), np.uint8)).shape == (2, 10)
