"""Params: overlays onto documented defaults, read strictly, validated after the merge."""

import re
from pathlib import Path

import pytest
import yaml

from pipeline.core.config import TrainConfig, as_dict, read_yaml
from pipeline.core.errors import ConfigError
from pipeline.core.params import defaults, load_params, parse_params
from pipeline.core.template import check_names, preset_overrides, template
from pipeline.objectives.sokd import SokdConfig
from tests.conftest import ROOT, TINY_PARAMS

SHIPPED = [
    ROOT / "params.yaml",
    TINY_PARAMS,
    *sorted(ROOT.glob("presets/*.yaml")),
    *sorted(ROOT.glob("benchmarks/*params*.yaml")),
]


def _write_variant(tmp_path: Path, edit: callable) -> Path:
    raw = yaml.safe_load(TINY_PARAMS.read_text())
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_params_files_load(path: Path) -> None:
    params = load_params(path)
    assert params.distill.objective("sokd").temperature > 0


def test_params_yaml_holds_every_key_with_a_comment_and_names_each_changed_default() -> None:
    """params.yaml is the complete template of the defaults in code, keeping its own values: a
    default changed in code, a key added or removed, or a missing comment fails here."""
    text = (ROOT / "params.yaml").read_text()
    assert text == template(yaml.safe_load(text)), "run `make params` after changing defaults"
    leaves = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert all("  # " in line for line in leaves if not line.rstrip().endswith(":"))
    assert "min_top1: 0.8  # " in text and "; default 0.0" in text  # the quickstart's own gate
    assert parse_params(yaml.safe_load(text)) == load_params(ROOT / "params.yaml")


@pytest.mark.parametrize("path", SHIPPED[1:], ids=lambda p: p.name)
def test_overlays_state_only_what_differs_from_the_defaults(path: Path) -> None:
    """Every leaf a profile or preset sets differs from its default, except keys DVC needs."""
    dvc_needs = {"seed", "train_teacher.arch", "distill.arch", "distill.objectives"}
    dvc_needs |= {"distill.weights", "distill.seed", "distill.test_curve", "distill.candidates"}
    dvc_needs |= {"export.objective", "prepare.dataset", "prepare.folder"}
    dvc_needs |= {"export.input", "export.opset", "export.exporter"}  # profile's
    base = as_dict(defaults())
    base["distill"].update(base["distill"].pop("settings"))

    def leaves(tree: dict, prefix: str = "") -> list[tuple[str, object]]:
        out = []
        for key, value in tree.items():
            if isinstance(value, dict) and value:
                out += leaves(value, f"{prefix}{key}.")
            elif value != {}:
                out.append((f"{prefix}{key}", value))
        return out

    for key, value in leaves(yaml.safe_load(path.read_text())):
        node = base
        for part in key.split("."):
            node = node[part]
        assert key in dvc_needs or node != value, f"{path.name}: {key} repeats its default"


def test_an_empty_file_means_the_documented_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    params = load_params(path)
    assert params.distill.train == TrainConfig()
    assert params.distill.objective("sokd") == SokdConfig()
    assert params.distill.objectives == ("vanilla", "sokd")


def test_an_overlay_changes_only_what_it_names(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("distill:\n  train: {optim: {lr: 0.01}}\n  sokd: {temperature: 2.0}\n")
    params = load_params(path)
    assert params.distill.train.optim.lr == 0.01
    assert params.distill.train.optim.momentum == defaults().distill.train.optim.momentum
    assert params.distill.objective("sokd").temperature == 2.0
    assert params.distill.objective("sokd").bridge_ce == SokdConfig().bridge_ce


def test_exponent_floats_without_a_dot_are_floats(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("distill:\n  train:\n    optim: {weight_decay: 5e-4, lr: 1E-1}\n")
    optim = load_params(path).distill.train.optim
    assert optim.weight_decay == 5.0e-4 and optim.lr == 0.1


def test_a_duplicate_key_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("seed: 0\ndistill:\n  arch: resnet8\n  arch: resnet20\n")
    with pytest.raises(ConfigError, match=r"line 4: duplicate key 'arch'"):
        load_params(path)


def test_the_readme_overlay_for_own_images_loads_with_its_yaml_merge(tmp_path: Path) -> None:
    # Read literally from the README: a user copies it, anchors and `<<:` merge keys included.
    section = (ROOT / "README.md").read_text().split("## Your own images", 1)[1]
    path = tmp_path / "my_photos.yaml"
    path.write_text(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    p = load_params(path)
    teacher, student = p.train_teacher.train, p.distill.train
    assert student.epochs < teacher.epochs  # the key beside `<<:` wins over the merged one
    assert student.optim.lr == teacher.optim.lr and student.augment == teacher.augment
    assert p.prepare.dataset == "imagefolder" and list(p.distill.objectives) == [
        "vanilla",
        "kd",
        "sokd",
    ]


def test_a_duplicate_key_beside_a_merge_is_still_an_error(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("a: &t {epochs: 2}\ndistill:\n  train: {<<: *t, epochs: 3, epochs: 4}\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'epochs'"):
        read_yaml(path)


def _set(section: str, key: str, value: object):
    def edit(raw: dict) -> None:
        node = raw
        for part in filter(None, section.split(".")):
            node = node.setdefault(part, {})
        node[key] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            _set("distill.sokd", "temprature", 4.0),
            r"params\.distill\.sokd\.temprature: unknown key",
        ),
        (_set("distill", "sodk", {}), r"params\.distill\.sodk: unknown key; valid keys are arch"),
        (
            _set("distill", "objectives", ["vanilla", "skod"]),
            r"params\.distill\.objectives\[1\]: unknown objective 'skod'; choose one of",
        ),
        (
            _set("distill.train.optim", "weight_decay", "5e-4x"),
            r"optim\.weight_decay: expected float, got '5e-4x'",
        ),
        (
            _set("train_teacher.train", "epochs", 1.5),
            r"params\.train_teacher\.train\.epochs: expected int",
        ),
        (
            _set("train_teacher.train", "epoch_fraction", 1.5),
            r"params\.train_teacher\.train\.epoch_fraction: must be in \(0, 1\]",
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
        (_set("export", "objective", "crd"), r"params\.export\.objective: 'crd' is not trained"),
        (_set("export", "objective", "kd"), r"params\.export\.objective: 'kd' is not trained"),
        (_set("runtime", "device", "gpu"), r"params\.runtime\.device: expected auto, cpu, cuda"),
        (
            lambda raw: raw["export"].update(input="uint8_any_size", opset=17),
            r"params\.export\.opset: must be 18 or later for input uint8_any_size",
        ),
        (_set("verify", "onnx", {"min_agreement": 1.5}), r"params\.verify\.onnx\.min_agreement"),
        (_set("", "verify", [1, 2]), r"params\.verify: expected a mapping, got list"),
    ],
)
def test_bad_params_fail_with_the_dotted_key(tmp_path: Path, edit: callable, message: str) -> None:
    # Loading checks keys, types, ranges and objectives; the whole-file check (`make repro`) adds
    # the names of the other registries, which each stage checks where it uses them.
    with pytest.raises(ConfigError, match=message):
        check_names(load_params(_write_variant(tmp_path, edit)))


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("seed: 0\nruntime: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_params(path)


def test_a_missing_params_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")


def _apply(overrides: list[str], params_file: Path) -> dict:
    """What `dvc exp run -S ...` makes of params.yaml: DVC's own Hydra override code."""
    from dvc.utils.hydra import apply_overrides

    apply_overrides(params_file, overrides)
    return yaml.safe_load(params_file.read_text())


@pytest.mark.parametrize("preset", sorted(ROOT.glob("presets/*.yaml")), ids=lambda p: p.name)
def test_a_preset_applied_with_dvc_overrides_gives_exactly_the_preset(
    tmp_path: Path, preset: Path
) -> None:
    params_file = tmp_path / "params.yaml"
    params_file.write_text((ROOT / "params.yaml").read_text())
    applied = _apply(preset_overrides(read_yaml(preset), read_yaml(params_file)), params_file)
    assert parse_params(applied) == load_params(preset)
    # DVC still finds every section it tracks for the objectives the preset trains.
    for name in applied["distill"]["objectives"]:
        assert name in applied["distill"]


def test_overrides_reset_what_params_yaml_sets_and_the_preset_does_not(tmp_path: Path) -> None:
    params_file = tmp_path / "params.yaml"
    params_file.write_text("verify: {min_top1: 0.8}\ndistill: {sokd: {temperature: 2.0}}\n")
    preset = tmp_path / "preset.yaml"
    preset.write_text("distill: {objectives: [vanilla, kd, sokd], train: {epochs: 3}}\n")
    applied = _apply(preset_overrides(read_yaml(preset), read_yaml(params_file)), params_file)
    params = parse_params(applied)
    assert params.verify.min_top1 == defaults().verify.min_top1
    assert params.distill.objective("sokd").temperature == SokdConfig().temperature
    assert params.distill.train.epochs == 3 and "kd" in applied["distill"]
