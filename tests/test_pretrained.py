"""Starting weights: torchvision's and timm's layouts, enums from torch's hub cache, RepDistiller
files, safetensors; the classifier rebuilt, the stem adapted, their preprocessing carried on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torchvision

from pipeline.core.errors import CheckpointError, ConfigError
from pipeline.core.inputs import IMAGENET_MEAN, IMAGENET_STD
from pipeline.models import create_model
from pipeline.models.pretrained import import_weights

timm = pytest.importorskip("timm")


def _imagenet_resnet18(path: Path) -> dict[str, torch.Tensor]:
    """A file in torchvision's ImageNet ResNet-18 layout (1000 classes; random values)."""
    torch.manual_seed(1)
    state = torchvision.models.resnet18(weights=None, num_classes=1000).state_dict()
    torch.save(state, path)
    return state


def test_an_imagenet_resnet18_file_becomes_a_7_class_teacher_with_only_fc_new(
    tmp_path: Path,
) -> None:
    state = _imagenet_resnet18(tmp_path / "resnet18.pth")
    model = create_model("tv_resnet18", 7, 3)
    fresh_fc = model.state_dict()["fc.weight"].clone()
    imported = import_weights(model, "tv_resnet18", str(tmp_path / "resnet18.pth"), 7)
    own = model.state_dict()
    assert imported.notes == (
        "fc.weight re-initialised (1000 -> 7 classes)",
        "fc.bias re-initialised (1000 -> 7 classes)",
    )
    torch.testing.assert_close(own["stem.0.weight"], state["conv1.weight"])
    torch.testing.assert_close(own["layer4.1.bn2.running_var"], state["layer4.1.bn2.running_var"])
    torch.testing.assert_close(own["fc.weight"], fresh_fc)  # rebuilt for 7 classes, not copied
    assert imported.kept == len(own) - 2 and len(imported.sha256) == 64
    assert (imported.spec.mean, imported.spec.std) == (IMAGENET_MEAN, IMAGENET_STD)


def test_grey_images_get_the_rgb_kernels_summed(tmp_path: Path) -> None:
    state = _imagenet_resnet18(tmp_path / "resnet18.pth")
    model = create_model("tv_resnet18", 7, 1)
    imported = import_weights(model, "tv_resnet18", str(tmp_path / "resnet18.pth"), 7)
    assert "first convolution adapted 3 -> 1 channels" in imported.notes
    torch.testing.assert_close(
        model.state_dict()["stem.0.weight"], state["conv1.weight"].sum(1, keepdim=True)
    )


def test_a_torchvision_enum_comes_from_torchs_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    cached.parent.mkdir(parents=True)
    state = _imagenet_resnet18(cached)  # the real file name torchvision looks for, offline
    model = create_model("tv_resnet18", 7, 3)
    imported = import_weights(model, "tv_resnet18", "IMAGENET1K_V1", 7)
    torch.testing.assert_close(
        model.state_dict()["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"]
    )
    spec = imported.spec
    assert (
        spec.size == (224, 224)
        and spec.resize == 256
        and spec.source == "torchvision IMAGENET1K_V1"
    )
    assert imported.origin == str(cached) and len(imported.sha256) == 64
    assert (
        imported.licence.startswith("torchvision IMAGENET1K_V1:") and "ImageNet" in imported.licence
    )


def test_an_enum_that_does_not_exist_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="tv_resnet18 has no torchvision weights 'IMAGENET9K'"):
        import_weights(create_model("tv_resnet18", 7, 3), "tv_resnet18", "IMAGENET9K", 7)


def test_a_timm_state_dict_loads_with_its_classifier_rebuilt(tmp_path: Path) -> None:
    torch.manual_seed(2)
    original = timm.create_model("mobilenetv3_small_100", pretrained=False, num_classes=1000)
    torch.save(original.state_dict(), tmp_path / "mnv3.pth")
    model = create_model("timm:mobilenetv3_small_100", 7, 3)
    imported = import_weights(model, "timm:mobilenetv3_small_100", str(tmp_path / "mnv3.pth"), 7)
    assert [n.split(" ")[0] for n in imported.notes] == ["classifier.weight", "classifier.bias"]
    torch.testing.assert_close(
        model.state_dict()["blocks_4.0.conv_pw.weight"],
        original.state_dict()["blocks.4.0.conv_pw.weight"],
    )
    assert imported.spec.interpolation == "bicubic" and imported.spec.size == (224, 224)


def test_safetensors_files_load_too(tmp_path: Path) -> None:
    safetensors = pytest.importorskip("safetensors.torch")
    original = timm.create_model("resnet18", pretrained=False, num_classes=7)
    safetensors.save_file(original.state_dict(), str(tmp_path / "r18.safetensors"))
    model = create_model("timm:resnet18", 7, 3)
    imported = import_weights(model, "timm:resnet18", str(tmp_path / "r18.safetensors"), 7)
    assert imported.notes == ()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(model.eval()(x), original.eval()(x))


def _repdistiller_key(ours: str) -> str:
    """This zoo's WRN names in RepDistiller's models/wrn.py layout."""
    key = re.sub(r"^stem\.", "conv1.", ours)
    key = re.sub(r"^stage(\d)\.", r"block\1.layer.", key)
    key = key.replace(".shortcut.", ".convShortcut.")
    return re.sub(r"^norm\.", "bn1.", key)


def test_a_repdistiller_wrn_40_2_file_loads_as_wrn_40_2(tmp_path: Path) -> None:
    torch.manual_seed(3)
    source = create_model("wrn_40_2", 100, 3).eval()
    for m in source.modules():  # statistics that are not the defaults, so they must be copied
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
    their = {_repdistiller_key(k): v for k, v in source.state_dict().items()}
    assert "block1.layer.0.convShortcut.weight" in their and "conv1.weight" in their
    torch.save({"model": their, "epoch": 240}, tmp_path / "wrn_40_2_vanilla.pth")
    model = create_model("wrn_40_2", 100, 3)
    import_weights(model, "wrn_40_2", str(tmp_path / "wrn_40_2_vanilla.pth"), 100)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model.eval()(x), source(x))
    with pytest.raises(CheckpointError, match="tensors, the architecture has"):
        import_weights(
            create_model("wrn_16_2", 100, 3),
            "wrn_16_2",
            str(tmp_path / "wrn_40_2_vanilla.pth"),
            100,
        )


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), tmp_path / "mnv2.pth")
    with pytest.raises(CheckpointError, match="do not fit"):
        import_weights(
            create_model("tv_resnet18", 7, 3), "tv_resnet18", str(tmp_path / "mnv2.pth"), 7
        )


def test_a_damaged_weights_file_is_refused(tmp_path: Path) -> None:
    _imagenet_resnet18(tmp_path / "r18.pth")
    damaged = tmp_path / "damaged.pth"
    damaged.write_bytes((tmp_path / "r18.pth").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cannot read weights"):
        import_weights(create_model("tv_resnet18", 7, 3), "tv_resnet18", str(damaged), 7)


def test_an_unknown_timm_name_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="unknown timm model 'resnet1888'"):
        create_model("timm:resnet1888", 7, 3)


def test_timm_not_installed_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError
    with pytest.raises(
        ConfigError, match=r"timm is not installed.*pip install 'sokd-pipeline\[timm\]'"
    ):
        create_model("timm:resnet18", 7, 3)


@pytest.mark.parametrize(
    "name", ["resnet18", "mobilenetv3_small_100", "efficientnet_b0", "regnetx_002", "convnext_atto"]
)
def test_timm_cnns_become_chains_split_before_their_last_stage(name: str) -> None:
    original = timm.create_model(name, pretrained=False, num_classes=5).eval()
    model = create_model(f"timm:{name}", 5, 3).eval()
    from pipeline.models.timm_zoo import key_map

    names = key_map(f"timm:{name}", 5, 3)
    model.load_state_dict({names[k]: v for k, v in original.state_dict().items()})
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(model(x), original(x))
    names = [n for n, _ in model.named_children()]
    last_stage = original.feature_info[-1]["module"].replace(".", "_")
    assert names.index(model.split_point) <= names.index(last_stage) < len(names) - 1


def _teacher_command(tmp_path: Path, prepared_path: Path, **train_teacher: object) -> list[str]:
    import yaml

    from tests.conftest import TINY_PARAMS

    raw = yaml.safe_load(TINY_PARAMS.read_text())
    raw["train_teacher"].update(train_teacher)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    out = ["--out", str(tmp_path / "t.pt"), "--metrics", str(tmp_path / "t.json")]
    live = ["--live", str(tmp_path / "live"), "--params", str(tmp_path / "params.yaml")]
    return ["train_teacher", "--data", str(prepared_path), *out, *live]


def _one_line_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from stages.cli import app

    result = CliRunner().invoke(app, args)
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert result.exit_code == 2, result.output
    assert len(errors) == 1 and message in errors[0], result.output
    assert not (tmp_path / "t.pt").exists()


@pytest.mark.parametrize(
    ("weights", "arch", "message"),
    [
        (
            "IMAGENET9K",
            "tv_resnet18",
            "params.train_teacher.weights: tv_resnet18 has no torchvision",
        ),
        ("damaged", "tv_resnet18", "cannot read weights"),
        ("mobilenet", "tv_resnet18", "do not fit"),
    ],
)
def test_bad_weights_are_one_line_and_exit_2(
    tmp_path: Path, prepared_path: Path, weights: str, arch: str, message: str
) -> None:
    if weights == "damaged":
        _imagenet_resnet18(tmp_path / "full.pth")
        (tmp_path / "w.pth").write_bytes((tmp_path / "full.pth").read_bytes()[:5000])
        weights = str(tmp_path / "w.pth")
    elif weights == "mobilenet":
        torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), tmp_path / "w.pth")
        weights = str(tmp_path / "w.pth")
    args = _teacher_command(tmp_path, prepared_path, arch=arch, weights=weights)
    _one_line_exit_2(args, message, tmp_path)


def test_an_unknown_timm_name_stops_the_first_stage_in_one_line(
    tmp_path: Path, prepared_path: Path
) -> None:
    args = _teacher_command(tmp_path, prepared_path, arch="timm:resnet1888")
    _one_line_exit_2(args, "params.train_teacher.arch: unknown timm model 'resnet1888'", tmp_path)


def test_timm_not_installed_stops_the_first_stage_in_one_line(
    tmp_path: Path, prepared_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)
    args = _teacher_command(tmp_path, prepared_path, arch="timm:resnet18")
    _one_line_exit_2(args, "timm is not installed", tmp_path)


def test_a_timm_tag_brings_its_own_preprocessing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # resnet18's default tag (a1_in1k) evaluates bicubic with crop 0.95; tv_in1k, torchvision's
    # weights, bilinear with crop 0.875 (256 -> 224). The weights come from a real Hugging Face
    # cache laid out on disk, read offline by timm's own loader.
    from safetensors.torch import save_file

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = tmp_path / "hub" / "models--timm--resnet18.tv_in1k"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    state = timm.create_model("resnet18", pretrained=False).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, snapshot / "model.safetensors")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    imported = import_weights(create_model("timm:resnet18", 7, 3), "timm:resnet18", "tv_in1k", 7)
    assert imported.spec.interpolation == "bilinear" and imported.spec.resize == 256
    assert imported.spec.source == "timm resnet18.tv_in1k"
    # ... and its own licence (the default tag's is apache-2.0), for the model card
    assert imported.licence.startswith("timm resnet18.tv_in1k: bsd-3-clause")
    default = timm.create_model("resnet18", pretrained=False).pretrained_cfg
    assert default["interpolation"] == "bicubic" and default["crop_pct"] == 0.95
