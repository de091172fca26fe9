from pathlib import Path

import pytest
import yaml

from pipeline.config import load_params
from pipeline.errors import ConfigError
from tests.conftest import ROOT, TINY_PARAMS


def _write_variant(tmp_path: Path, edit: callable) -> Path:
    raw = yaml.safe_load(TINY_PARAMS.read_text())
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    "path", [ROOT / "params.yaml", TINY_PARAMS, *sorted(ROOT.glob("presets/*.yaml"))]
)
def test_shipped_params_files_load(path: Path) -> None:
    params = load_params(path)
    assert params.distill.sokd.temperature > 0


def _set(section: str, key: str, value: object):
    def edit(raw: dict) -> None:
        node = raw
        for part in section.split("."):
            node = node[part]
        node[key] = value

    return edit


def _drop(section: str, key: str):
    def edit(raw: dict) -> None:
        node = raw
        for part in section.split("."):
            node = node[part]
        del node[key]

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            _set("distill.sokd", "temprature", 4.0),
            r"params\.distill\.sokd\.temprature: unknown key",
        ),
        (_drop("distill.train.optim", "lr"), r"params\.distill\.train\.optim\.lr: missing key"),
        (
            _set("distill.train.optim", "weight_decay", "5e-4"),
            r"optim\.weight_decay: expected float, got '5e-4' \(write floats",
        ),
        (
            _set("train_teacher.train", "epochs", 1.5),
            r"params\.train_teacher\.train\.epochs: expected int",
        ),
        (_set("runtime", "channels_last", 1), r"params\.runtime\.channels_last: expected bool"),
        (
            _set("distill.train.optim", "lr", -0.1),
            r"params\.distill\.train\.optim\.lr: must be > 0",
        ),
        (
            _set("distill.sokd", "temperature", 0.0),
            r"params\.distill\.sokd\.temperature: must be > 0",
        ),
        (
            _set("distill.sokd", "bridge_init", "copy"),
            r"params\.distill\.sokd\.bridge_init: expected one of random, teacher, got 'copy'",
        ),
        (
            _set("distill", "arch", "resnet9"),
            r"params\.distill\.arch: unknown model 'resnet9'; choose one of",
        ),
        (_set("prepare", "dataset", "mnist"), r"params\.prepare\.dataset: unknown dataset 'mnist'"),
        (_set("export", "objective", "dkd"), r"params\.export\.objective: unknown objective 'dkd'"),
        (_set("runtime", "device", "gpu"), r"params\.runtime\.device: expected auto, cpu, cuda"),
        (_set("verify", "min_agreement", 1.5), r"params\.verify\.min_agreement: is a fraction"),
    ],
)
def test_bad_params_fail_with_the_dotted_key(tmp_path: Path, edit: callable, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_params(_write_variant(tmp_path, edit))


def test_a_missing_section_is_named(tmp_path: Path) -> None:
    path = _write_variant(tmp_path, lambda raw: raw.pop("verify"))
    with pytest.raises(ConfigError, match=r"params\.verify: missing key"):
        load_params(path)


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("seed: 0\nruntime: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_params(path)


def test_a_missing_params_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
