"""The torch-free runtime: its preprocessing against the evaluation path, `sokd predict`."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.core.inputs import InputSpec
from pipeline.data.batches import resize_and_crop
from pipeline.models import create_model
from pipeline.models.checkpoint import load_checkpoint, save_checkpoint
from pipeline.shipping.deploy import fit, load_student
from pipeline.shipping.onnx import export_onnx
from tests.conftest import ROOT


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
@pytest.mark.parametrize(("resize", "size"), [(40, (32, 32)), (36, (32, 24)), (0, (28, 28))])
def test_fit_makes_the_evaluation_paths_pixels(
    interpolation: str, resize: int, size: tuple[int, int]
) -> None:
    # Odd, landscape, portrait, square, smaller and larger than the input: every branch of the
    # shorter-side resize, the truncated longer side and the rounded crop offsets.
    spec = InputSpec((0.5,) * 3, (0.25,) * 3, size, resize=resize, interpolation=interpolation)
    rng = np.random.default_rng(0)
    for h, w in [(37, 53), (64, 48), (50, 50), (20, 30), (121, 90), (33, 97)]:
        image = rng.integers(0, 256, (3, h, w), dtype=np.uint8)
        expected = resize_and_crop(torch.from_numpy(image).float()[None] / 255, spec)[0]
        got = fit(image, spec)
        assert got.shape == tuple(expected.shape) == (3, *size)
        # Pillow's antialiased filters against torch's: float rounding apart, the same pixels.
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def photo_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An RGB student that reads 32x32 crops of images resized to 36 on the shorter side."""
    from types import SimpleNamespace

    from pipeline.core.config import ExportConfig

    root = tmp_path_factory.mktemp("photo")
    torch.manual_seed(0)
    spec = InputSpec((0.5, 0.4, 0.3), (0.2, 0.25, 0.3), (32, 32), resize=36)
    model = create_model("resnet8", 3, 3).eval()
    data = SimpleNamespace(num_classes=3, image_shape=(3, 36, 36), classes=("cat", "dog", "fox"))
    save_checkpoint(
        root / "s.pt", model, arch="resnet8", role="student", data=data, params={}, metrics={},
        spec=spec,
    )  # fmt: skip
    export_onnx(load_checkpoint(root / "s.pt"), root / "s.onnx", ExportConfig())
    return root / "s.onnx"


def _sokd(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "stages", "predict", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_sokd_predict_gives_each_files_label_as_the_checkpoint_does(
    photo_student: Path, tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    photos = tmp_path / "photos"
    for i, (h, w) in enumerate([(40, 60), (90, 45), (36, 36), (100, 120)]):
        (photos / "sub").mkdir(parents=True, exist_ok=True)
        where = photos / "sub" if i % 2 else photos
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(where / f"{i}.png")
    (photos / "notes.txt").write_text("not an image, skipped in a folder")
    out = tmp_path / "p.csv"
    result = _sokd(str(photos), "--model", str(photo_student), "--top-k", "3", "--out", str(out),
                   cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    assert [Path(r["path"]).name for r in rows] == ["0.png", "2.png", "1.png", "3.png"]
    # The same images through the torch model and the evaluation path's preprocessing.
    ckpt = load_checkpoint(photo_student.with_suffix(".pt"))
    model = ckpt.build().eval()
    for row in rows:
        pixels = torch.from_numpy(np.array(Image.open(row["path"]))).permute(2, 0, 1)
        x = resize_and_crop(pixels.float()[None] / 255, ckpt.spec)
        x = (x - torch.tensor(ckpt.spec.mean).view(1, 3, 1, 1)) / torch.tensor(ckpt.spec.std).view(
            1, 3, 1, 1
        )
        probs = model(x).softmax(1)[0].detach().numpy()
        best = int(probs.argmax())
        assert row["label1"] == ckpt.classes[best]
        assert abs(float(row["prob1"]) - probs[best]) < 1e-4
        assert float(row["prob1"]) >= float(row["prob2"]) >= float(row["prob3"])
    as_json = tmp_path / "p.json"
    assert _sokd(str(photos), "--model", str(photo_student), "--out", str(as_json),
                 cwd=tmp_path).returncode == 0  # fmt: skip
    listed = json.loads(as_json.read_text())
    assert [r["top"][0]["label"] for r in listed] == [r["label1"] for r in rows]
    printed = _sokd(str(photos / "0.png"), "--model", str(photo_student), cwd=tmp_path)
    assert printed.stdout.split("\t")[1].split()[0] == rows[0]["label1"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.png"], "missing.png: no such file or folder"),
        (["empty"], "holds no image"),
        (["bad.png"], "is not a readable image"),
        (["ok.png", "--out", "p.txt"], "give a .csv or .json file"),
        (["ok.png", "--model", "s.pt"], "checkpoint"),
        (["ok.png", "--model", "bad.onnx"], "not a usable ONNX file"),
        (["ok.png"], "no shipped file here"),
    ],
    ids=["missing", "empty folder", "not an image", "bad --out", "torch file", "not onnx", "none"],
)
def test_sokd_predict_refuses_bad_input_in_one_line(
    args: list[str], message: str, photo_student: Path, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.png").write_bytes(b"\x89PNG but not really")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "s.pt").write_bytes(b"PK\x03\x04 a zip")
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07 no graph, half a protobuf")
    if "--model" not in args and args != ["ok.png"]:
        args = [*args, "--model", str(photo_student)]
    result = _sokd(*args, cwd=tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr
    assert message in errors[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "p.txt").exists()


def test_load_student_runs_a_checkpoint_and_its_onnx_file_alike(photo_student: Path) -> None:
    images = np.random.default_rng(2).integers(0, 256, (3, 3, 50, 70), dtype=np.uint8)
    onnx_logits = load_student(photo_student).logits(images)
    torch_logits = load_student(photo_student.with_suffix(".pt")).logits(images)
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4, rtol=1e-4)


def test_the_deploy_pages_onnxruntime_snippet_runs_as_written(
    photo_student: Path, tmp_path: Path
) -> None:
    # docs/deploy.md's preprocessing for users without this package: the same label and logits.
    page = (ROOT / "docs/deploy.md").read_text()
    block = page.split("<!-- tested: onnxruntime-alone")[1].split("```python\n")[1]
    snippet = block.split("```")[0]
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (45, 70, 3), np.uint8)).save(photo)
    snippet = snippet.replace("models/int8/student.int8.onnx", str(photo_student))
    snippet = snippet.replace('"photo.jpg"', repr(str(photo)))
    namespace: dict = {}
    exec(compile(snippet, "docs/deploy.md", "exec"), namespace)  # the page's code, as written
    student = load_student(photo_student)
    pixels = np.array(Image.open(photo)).transpose(2, 0, 1)[None]
    np.testing.assert_allclose(namespace["logits"], student.logits(pixels), atol=1e-5, rtol=0)
