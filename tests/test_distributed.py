"""torchrun (DDP, gloo on CPU): two processes with one global batch train as one process does."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import TINY_PARAMS

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _params(tmp_path: Path) -> Path:
    raw = yaml.safe_load(TINY_PARAMS.read_text())
    # LeNet-5 has no BatchNorm, whose batch statistics would differ between a 32-image batch and
    # two 16-image halves; without it the two runs must agree up to float summation order.
    raw["train_teacher"]["arch"] = "lenet5"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _run(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def _train_teacher(name: str) -> list[str]:
    """train_teacher's arguments writing `<name>.pt`, `<name>.json` and plots under `<name>`."""
    return ["train_teacher", "--out", f"{name}.pt", "--metrics", f"{name}.json", "--live", name]


def _torchrun(*args: str) -> list[str]:
    return [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", str(BIN / "sokd"), *args]


@pytest.mark.skipif(
    shutil.which("torchrun", path=str(BIN)) is None, reason="torchrun not installed"
)
def test_two_processes_train_the_teacher_as_one_does(tmp_path: Path, prepared_path: Path) -> None:
    params = _params(tmp_path)
    common = ["--data", str(prepared_path), "--params", str(params)]
    _run([str(BIN / "sokd"), *_train_teacher("one"), *common], tmp_path)
    _run(_torchrun(*_train_teacher("two"), "--state", "two-state.pt", *common), tmp_path)
    one = torch.load(tmp_path / "one.pt", weights_only=True)["state_dict"]
    two = torch.load(tmp_path / "two.pt", weights_only=True)["state_dict"]
    for key in one:  # stated tolerance: float summation order only
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-6, msg=key)
    m1, m2 = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert m1["val/top1_last"] == m2["val/top1_last"]
    assert abs(m1["train/top1_last"] - m2["train/top1_last"]) < 1e-9  # counts summed over processes
    assert torch.load(tmp_path / "two-state.pt", weights_only=True)["epoch"] == 2


@pytest.mark.skipif(
    shutil.which("torchrun", path=str(BIN)) is None, reason="torchrun not installed"
)
def test_sokd_distills_under_torchrun(tmp_path: Path, prepared_path: Path) -> None:
    params = _params(tmp_path)
    common = ["--data", str(prepared_path), "--params", str(params)]
    _run([str(BIN / "sokd"), *_train_teacher("teacher"), *common], tmp_path)
    _run(
        _torchrun(
            "distill",
            "--objective",
            "sokd",
            "--teacher",
            "teacher.pt",
            "--out",
            "sokd",
            "--metrics",
            "sokd.json",
            "--live",
            "sokd-plots",
            *common,
        ),
        tmp_path,
    )
    assert {p.name for p in (tmp_path / "sokd").iterdir()} == {"student.pt", "improved_teacher.pt"}
    metrics = json.loads((tmp_path / "sokd.json").read_text())
    assert metrics["params/trainable"] > metrics["params/student"]  # the bridge trained too
    term = tmp_path / "sokd-plots" / "plots" / "metrics" / "train" / "bridge" / "kl_teacher.tsv"
    assert len(term.read_text().splitlines()) == 3  # header + one row per epoch
