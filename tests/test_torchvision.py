"""torchvision classifiers as teacher and student, and a teacher imported from a weights file."""

import json
from pathlib import Path

import pytest
import torch
import torchvision
import yaml
from typer.testing import CliRunner

from pipeline.core.files import sha256_file
from pipeline.models import create_model
from pipeline.models.staged import count_parameters
from pipeline.models.torchvision_zoo import torchvision_key_map
from stages.cli import app
from tests.conftest import TINY_PARAMS
from tests.helpers import write_image_folder

TV = {
    "tv_resnet18": torchvision.models.resnet18,
    "tv_resnet34": torchvision.models.resnet34,
    "tv_resnet50": torchvision.models.resnet50,
    "tv_mobilenet_v2": torchvision.models.mobilenet_v2,
    "tv_mobilenet_v3_small": torchvision.models.mobilenet_v3_small,
}


@pytest.mark.parametrize("arch", sorted(TV))
def test_staged_torchvision_model_computes_what_torchvision_computes(arch: str) -> None:
    original = TV[arch](weights=None, num_classes=7).eval()
    staged = create_model(arch, 7, 3).eval()
    assert count_parameters(staged) == count_parameters(original)
    key_map = torchvision_key_map(arch, 7)
    staged.load_state_dict({key_map[k]: v for k, v in original.state_dict().items()})
    images = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(staged(images), original(images))


def test_resnet_bridge_split_is_before_layer4() -> None:
    assert create_model("tv_resnet18", 10, 3).split_point == "layer4"


@pytest.fixture(scope="module")
def folder_params(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Generated RGB image folders (24x24 PNGs, 3 classes), streamed from the files (storage:
    files), and params for torchvision models on them."""
    root = tmp_path_factory.mktemp("folders")
    classes = ["ant", "bee", "cat"]
    write_image_folder(root / "raw" / "train", classes, per_class=12, size=24)
    write_image_folder(root / "raw" / "val", classes, per_class=4, size=24, seed=1)
    raw = yaml.safe_load(TINY_PARAMS.read_text())
    raw["prepare"].update(dataset="imagefolder", val_size=6, image_size=24, storage="files")
    raw["train_teacher"]["arch"] = "tv_resnet18"
    raw["train_teacher"]["train"].update(epochs=0, batch_size=8)
    raw["distill"]["arch"] = "tv_mobilenet_v3_small"
    raw["distill"]["train"].update(epochs=1, batch_size=8)
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    return root, params


def _invoke(*args: str) -> None:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)


def test_imported_torchvision_teacher_distils_into_a_torchvision_student(folder_params) -> None:
    root, params = folder_params
    p = ["--params", str(params)]
    _invoke(
        "prepare",
        "--raw",
        str(root / "raw"),
        "--out",
        str(root / "data.pt"),
        "--metrics",
        str(root / "prepare.json"),
        *p,
    )
    assert torch.load(root / "data.pt", weights_only=True)["storage"] == "files"
    weights = root / "resnet18.pth"
    torch.manual_seed(1)
    torch.save(torchvision.models.resnet18(weights=None, num_classes=3).state_dict(), weights)
    raw = yaml.safe_load(params.read_text())
    raw["train_teacher"]["weights"] = str(weights)
    params.write_text(yaml.safe_dump(raw))
    _invoke(
        "train_teacher",
        "--data",
        str(root / "data.pt"),
        "--out",
        str(root / "teacher.pt"),
        "--metrics",
        str(root / "teacher.json"),
        "--live",
        str(root / "tplots"),
        *p,
    )
    metrics = json.loads((root / "teacher.json").read_text())
    assert metrics["weights/sha256"] == sha256_file(weights)
    # torchvision weights bring ImageNet's normalisation, and the checkpoint carries it on.
    teacher_ckpt = torch.load(root / "teacher.pt", weights_only=True)
    assert (
        teacher_ckpt["mean"] == [0.485, 0.456, 0.406]
        and teacher_ckpt["normalisation"] == "ImageNet"
    )
    assert 0 <= metrics["val/top1_imported"] <= 1
    saved = torch.load(root / "teacher.pt", weights_only=True)["state_dict"]
    torch.testing.assert_close(
        saved["stem.0.weight"], torch.load(weights, weights_only=True)["conv1.weight"]
    )

    _invoke(
        "distill",
        "--objective",
        "sokd",
        "--data",
        str(root / "data.pt"),
        "--teacher",
        str(root / "teacher.pt"),
        "--out",
        str(root / "sokd"),
        "--metrics",
        str(root / "sokd.json"),
        "--live",
        str(root / "splots"),
        *p,
    )
    student = torch.load(root / "sokd" / "student.pt", weights_only=True)
    assert student["arch"] == "tv_mobilenet_v3_small" and student["classes"] == [
        "ant",
        "bee",
        "cat",
    ]
    improved = torch.load(root / "sokd" / "improved_teacher.pt", weights_only=True)
    assert improved["arch"] == "tv_resnet18"
    assert create_model("tv_resnet18", 3, 3).load_state_dict(
        improved["state_dict"]
    )  # loads strictly


def test_weights_for_another_architecture_are_one_clear_error(folder_params) -> None:
    root, params = folder_params
    _invoke(
        "prepare",
        "--raw",
        str(root / "raw"),
        "--out",
        str(root / "data2.pt"),
        "--metrics",
        str(root / "p2.json"),
        "--params",
        str(params),
    )
    wrong = root / "mobilenet.pth"
    torch.save(torchvision.models.mobilenet_v2(weights=None, num_classes=3).state_dict(), wrong)
    raw = yaml.safe_load(params.read_text())
    raw["train_teacher"]["weights"] = str(wrong)
    wrong_params = root / "wrong.yaml"
    wrong_params.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(
        app,
        [
            "train_teacher",
            "--data",
            str(root / "data2.pt"),
            "--out",
            str(root / "t2.pt"),
            "--metrics",
            str(root / "t2.json"),
            "--live",
            str(root / "t2"),
            "--params",
            str(wrong_params),
        ],
    )
    assert result.exit_code == 2
    assert "weights in" in result.output and "do not fit" in result.output
    assert not (root / "t2.pt").exists()
