"""The benchmark commands run end to end on tiny inputs and write what they promise."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY_PARAMS
from tests.helpers import write_fashion_mnist

pytestmark = pytest.mark.slow


def _python(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_speed_benchmark_writes_its_table_and_json(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    result = _python(
        "-m",
        "benchmarks.speed",
        "--pairs",
        "quickstart",
        "--steps",
        "1",
        "--rounds",
        "1",
        "--workers",
        "0",
        "--out",
        str(out),
    )
    report = json.loads(out.read_text())
    assert {r["objective"] for r in report["rows"]} == {"vanilla", "kd", "sokd"}
    assert all(r["plain_images_per_s"] > 0 and r["fast_images_per_s"] > 0 for r in report["rows"])
    # Arithmetic per image grows with the networks a step runs: student < + teacher < + bridge.
    flops = {r["objective"]: r["gflop_per_image"] for r in report["rows"]}
    assert 0 < flops["vanilla"] < flops["kd"] < flops["sokd"]
    parts = report["sokd_parts"]["quickstart"]
    assert parts["sum_of_parts_ms"] == pytest.approx(
        parts["student_ms"] + parts["teacher_ms"] + parts["bridge_ms"]
    )
    assert "| quickstart | sokd |" in result.stdout


def test_speed_benchmark_without_a_compiler_fails_in_one_line_and_writes_nothing(
    tmp_path: Path,
) -> None:
    out = tmp_path / "speed.json"
    args = ["--pairs", "quickstart", "--steps", "1", "--rounds", "1", "--workers", "0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CXX": str(tmp_path / "no-such-compiler")}
    env["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path / "inductor")  # no kernel compiled earlier
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.speed", *args, "--compile", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "run without --compile" in errors[0]
    assert not out.exists()


def test_comparison_benchmark_writes_results_and_resumes(tmp_path: Path) -> None:
    raw = write_fashion_mnist(tmp_path / "raw", n_train=300, n_test=80)
    args = [
        "-m",
        "benchmarks.compare",
        "--params",
        str(TINY_PARAMS),
        "--raw",
        str(raw),
        "--seeds",
        "0",
        "--methods",
        "vanilla",
        "sokd",
        "--out",
        str(tmp_path / "bench"),
    ]
    _python(*args)
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert len(results["rows"]) == 2
    for row in results["rows"]:
        assert row["test_top1_best"] >= row["test_top1_last"]
        assert len(row["val_top1_per_epoch"]) == 2 and 1 <= row["best_epoch"] <= 2
    sokd = next(r for r in results["rows"] if r["method"] == "sokd")
    assert sokd["trainable_params_added"] > 0  # the bridge
    report = (tmp_path / "bench" / "RESULTS.md").read_text()
    assert "| sokd |" in report and "| vanilla |" in report and "SOKD" in report
    assert (tmp_path / "bench" / "val_top1.png").stat().st_size > 0
    again = _python(*args)  # every run is cached: nothing is trained twice
    assert "seed 0: test top-1" not in again.stdout
