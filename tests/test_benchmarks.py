"""The benchmark commands run end to end on tiny inputs and write what they promise."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
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


def test_the_user_path_photos_are_a_users_folders_of_mixed_files(tmp_path: Path) -> None:
    from PIL import Image

    from benchmarks.experiments import write_photos
    from pipeline.core.config import PrepareConfig
    from pipeline.data.datasets import prepare

    raw = write_fashion_mnist(tmp_path / "raw", n_train=400, n_test=100)
    counts = write_photos(raw, tmp_path / "photos", {"train_per_class": 4, "test_per_class": 2})
    assert counts == {"train": 40, "val": 20}
    files = sorted((tmp_path / "photos").rglob("*.*"))
    assert {f.suffix for f in files} == {".png", ".jpg"}
    assert {Image.open(f).mode for f in files} == {"L", "RGB", "RGBA", "P"}
    assert len({Image.open(f).size for f in files}) > 5  # sizes of 28 to 112 pixels
    cfg = PrepareConfig(dataset="imagefolder", val_size=10, image_size=16, resize="shorter_side")
    prepared = prepare(
        tmp_path / "photos", cfg, seed=0
    )  # what the pipeline's prepare makes of them
    assert prepared["train"]["images"].shape == (30, 3, 16, 16) and len(prepared["classes"]) == 10
