"""`sokd profile`: each candidate student timed as its shipped files before any training, and the
budget it is held to (params `budget`, `distill.candidates`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.core.config import BudgetConfig
from pipeline.core.errors import ConfigError
from stages.cli import app
from tests.conftest import TINY_PARAMS

CANDIDATES = ["lenet5", "resnet8", "resnet20"]


def _profile(tmp_path: Path, prepared_path: Path, budget: dict, candidates: list[str]):
    params = yaml.safe_load(TINY_PARAMS.read_text())
    params["budget"] = budget
    params["distill"]["candidates"] = candidates
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    args = ["profile", "--data", str(prepared_path), "--params", str(tmp_path / "params.yaml")]
    args += ["--record", str(tmp_path / "record.json"), "--metrics", str(tmp_path / "m.json")]
    return CliRunner().invoke(app, args)


@pytest.fixture(scope="module")
def unlimited(tmp_path_factory: pytest.TempPathFactory, prepared_path: Path) -> dict:
    """Every candidate profiled with no limit set."""
    tmp = tmp_path_factory.mktemp("profile")
    done = _profile(tmp, prepared_path, {}, CANDIDATES)
    assert done.exit_code == 0, done.output
    return json.loads((tmp / "record.json").read_text())


def test_every_candidate_gets_its_shipped_files_figures(unlimited: dict) -> None:
    for arch in CANDIDATES:
        assert unlimited[f"{arch}/within_budget"] is True  # no limit set: all within
        assert 0 < unlimited[f"{arch}/int8_p50_ms"] <= unlimited[f"{arch}/int8_p90_ms"]
        assert 0 < unlimited[f"{arch}/fp32_p50_ms"] <= unlimited[f"{arch}/fp32_p90_ms"]
        assert 0 < unlimited[f"{arch}/bytes"] < unlimited[f"{arch}/fp32_bytes"]  # INT8 is smaller
    # Size and arithmetic order the networks as their definitions do.
    assert unlimited["resnet8/macs"] < unlimited["resnet20/macs"]
    assert unlimited["resnet8/params"] < unlimited["resnet20/params"]
    assert unlimited["profile/calls_per_file"] >= 1000
    assert unlimited["profile/threads"] == 1 and unlimited["profile/machine"]["cpu"]


def test_a_budget_between_the_candidates_excludes_the_larger(
    tmp_path: Path, prepared_path: Path, unlimited: dict
) -> None:
    limit = (unlimited["resnet8/bytes"] + unlimited["resnet20/bytes"]) // 2
    done = _profile(tmp_path, prepared_path, {"max_bytes": limit}, CANDIDATES)
    assert done.exit_code == 0, done.output
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["resnet8/within_budget"] and record["lenet5/within_budget"]
    assert not record["resnet20/within_budget"]
    assert f"> budget.max_bytes {limit:,}" in record["resnet20/over_budget"]
    metrics = json.loads((tmp_path / "m.json").read_text())  # the headline for dvc exp show
    assert set(metrics) == {
        f"{a}/{k}" for a in CANDIDATES for k in ("int8_p90_ms", "bytes", "within_budget")
    }


def test_a_budget_below_every_candidate_stops_with_one_line(
    tmp_path: Path, prepared_path: Path, unlimited: dict
) -> None:
    smallest = min(unlimited[f"{a}/macs"] for a in CANDIDATES)
    done = _profile(tmp_path, prepared_path, {"max_macs": smallest - 1}, CANDIDATES[1:])
    assert done.exit_code == 1
    errors = [line for line in done.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no candidate student is within budget" in errors[0]
    assert "the fastest, resnet8" in errors[0] and "budget.max_macs" in errors[0]
    assert json.loads((tmp_path / "record.json").read_text())["resnet8/within_budget"] is False


def test_an_unknown_candidate_is_refused_before_any_work(
    tmp_path: Path, prepared_path: Path
) -> None:
    done = _profile(tmp_path, prepared_path, {}, ["resnet8", "resnet9000"])
    assert done.exit_code == 2
    assert "distill.candidates[1]" in done.output and "resnet9000" in done.output
    assert not (tmp_path / "record.json").exists()


def test_budget_limits_are_checked() -> None:
    with pytest.raises(ConfigError, match="latency_ms"):
        BudgetConfig(latency_ms=-1)
    budget = BudgetConfig(latency_ms=2.0, max_bytes=1000)
    assert budget.misses(1.9, 1000, 10**9) == []  # max_macs 0: unchecked
    assert [m.split(" > ")[1] for m in budget.misses(2.1, 1001, 0)] == [
        "budget.latency_ms 2.0",
        "budget.max_bytes 1,000",
    ]


def test_candidates_timed_on_another_machine_feed_the_budget(
    tmp_path: Path, prepared_path: Path
) -> None:
    # `--export`: the files, a manifest and the timing script, for a machine without this project.
    params = yaml.safe_load(TINY_PARAMS.read_text())
    params["distill"]["candidates"] = ["lenet5", "resnet8"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out, common = tmp_path / "deploy", ["--data", str(prepared_path), "--metrics"]
    args = ["profile", *common, str(tmp_path / "m.json"), "--params", str(tmp_path / "params.yaml")]
    done = CliRunner().invoke(app, [*args, "--export", str(out)])
    assert done.exit_code == 0, done.output
    # There: isolated from this checkout, torch made unimportable; numpy and onnxruntime only.
    script = "import sys, runpy; sys.modules['torch'] = None; sys.argv = sys.argv[1:]; "
    script += "runpy.run_path(sys.argv[0], run_name='__main__')"
    there = subprocess.run(
        [sys.executable, "-I", "-c", script, str(out / "time_candidates.py"), str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert there.returncode == 0, there.stderr
    measured = json.loads((out / "latencies.json").read_text())
    assert set(measured["files"]) == {
        f"{a}|{k}" for a in ("lenet5", "resnet8") for k in ("fp32", "int8")
    }
    assert measured["calls_per_file"] >= 1000 and measured["machine"]["onnxruntime"]
    # Back here: the budget reads those figures instead of measuring.
    params["budget"] = {"latency_ms": measured["files"]["lenet5|int8"]["p90_ms"] * 1.01,
                        "latencies_from": str(out / "latencies.json")}  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = CliRunner().invoke(app, [*args, "--record", str(tmp_path / "r.json")])
    record = json.loads((tmp_path / "r.json").read_text())
    for arch in ("lenet5", "resnet8"):
        assert record[f"{arch}/int8_p90_ms"] == measured["files"][f"{arch}|int8"]["p90_ms"]
    assert record["lenet5/within_budget"] is True
    assert record["profile/latencies_from"] == str(out / "latencies.json")


def test_a_latencies_file_without_a_candidate_is_refused(
    tmp_path: Path, prepared_path: Path
) -> None:
    (tmp_path / "latencies.json").write_text(json.dumps({"files": {}}))
    done = _profile(
        tmp_path, prepared_path, {"latencies_from": str(tmp_path / "latencies.json")}, ["resnet8"]
    )
    assert done.exit_code == 2
    assert "has no figures for resnet8|fp32, resnet8|int8" in done.output


def test_candidates_are_made_as_the_shipped_files_are(prepared_path: Path, tmp_path: Path) -> None:
    """`export.input` reaches the candidates' files: an any-size ship is profiled with its
    in-graph resize and crop."""
    import onnxruntime as ort

    from pipeline.core.config import ExportConfig, QuantizeConfig
    from pipeline.data.datasets import load_prepared
    from pipeline.shipping.profile import candidate_files

    data = load_prepared(prepared_path, ("train",))
    cfg = QuantizeConfig(calibration_images=64)
    built = candidate_files("lenet5", data, cfg, 0, tmp_path, ExportConfig(input="uint8_any_size"))
    for kind in ("fp32", "int8"):
        session = ort.InferenceSession(str(built[kind]), providers=["CPUExecutionProvider"])
        assert session.get_inputs()[0].shape[1:] == ["height", "width", 1]
