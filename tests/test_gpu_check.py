"""`make gpu-check`: refuses without CUDA; its dry run proves every part on the CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmarks.gpu_check import PARTS, PLAN, resolve_plan, stage_commands, tiny_params
from tests.conftest import ROOT


def _check(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=1800,
    )


def test_without_cuda_it_refuses_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    result = _check(tmp_path, "--out", str(out), CUDA_VISIBLE_DEVICES="")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no CUDA device is visible")
    assert "--cpu-dry-run" in lines[0]
    assert not out.exists()


def test_the_gpu_plan_is_what_dvc_resolves_from_dvc_yaml(tmp_path: Path) -> None:
    """The GPU machine has no dvc: it runs the commands DVC resolved here, kept up to date."""
    resolve_plan(tmp_path / "plan.txt")
    assert (tmp_path / "plan.txt").read_text() == PLAN.read_text(), "run `make gpu-plan`"
    commands = dict(stage_commands())
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    objectives = tiny_params("cpu")["distill"]["objectives"]
    expected = [f"distill@{o}" for o in objectives]
    assert set(commands) == {n for n in spec["stages"] if n != "distill"} | set(expected)
    for label, argv in commands.items():
        assert argv[:4] == [sys.executable, "-m", "stages", label.split("@")[0]]
        assert not any("${" in a for a in argv), argv


@pytest.mark.slow
def test_the_dry_run_passes_every_part_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    # A time budget the toy parts cannot exhaust: the compile column must run, however slow
    # this CPU is today (at the default 420 s a 388 s run on a slow spell skipped it).
    result = _check(tmp_path, "--cpu-dry-run", "--budget-s", "1500", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert report["mode"] == "cpu-dry-run" and report["passed"]
    assert list(report["parts"]) == list(PARTS)
    parts = report["parts"]
    assert all(p["status"] == "passed" for p in parts.values()), parts
    assert parts["tests"]["passed"] >= 4 and parts["tests"]["failures"] == 0
    assert parts["pipeline"]["gate_passed"] is True
    assert list(parts["pipeline"]["stage_seconds"])[-1] == "verify"
    assert parts["torchrun"]["backend"] == "gloo"
    assert parts["epoch"]["eager"]["epoch_s"] > 0 and parts["epoch"]["eager"]["peak_memory_mb"] > 0
    rows = parts["speed"]["rows"]
    assert {r["objective"] for r in rows} == {"vanilla", "kd", "sokd"}
    assert any("compiled_images_per_s" in r for r in rows)  # the torch.compile column ran once
    for index, name in enumerate(PARTS, 1):
        assert f"[{index}/{len(PARTS)}] {name} passed" in result.stdout
    assert "| speed | passed |" in result.stdout
