"""Resume: a run killed with SIGKILL and started again ends with the same weights."""

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.core.errors import CheckpointError
from pipeline.data.batches import make_batches
from pipeline.data.datasets import load_prepared
from pipeline.models import create_model
from pipeline.objectives import build_objective
from pipeline.training import runs as training
from pipeline.training.engine import FitHooks, fit
from pipeline.training.resume import ResumeFile, code_fingerprint, loaded_sources
from pipeline.training.runs import Extras, run_teacher
from tests.conftest import CPU, TINY_PARAMS, with_changes

SOKD = str(Path(sys.executable).parent / "sokd")


def _params(tmp_path: Path, epochs: int) -> Path:
    raw = yaml.safe_load(TINY_PARAMS.read_text())
    raw["train_teacher"]["arch"] = "resnet8"  # small and quick; what matters is the state
    raw["train_teacher"]["train"]["epochs"] = epochs
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _train(tmp_path: Path, prepared: Path, name: str, params: Path) -> subprocess.Popen:
    args = [
        SOKD,
        "train_teacher",
        "--data",
        str(prepared),
        "--out",
        f"{name}.pt",
        "--metrics",
        f"{name}.json",
        "--live",
        f"{name}-plots",
        "--state",
        f"{name}-state.pt",
        "--params",
        str(params),
    ]
    return subprocess.Popen(
        args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def _epochs_saved(path: Path) -> int:
    try:
        return torch.load(path, weights_only=True)["epoch"] if path.is_file() else 0
    except Exception:  # being replaced right now; the rename is atomic, so look again
        return 0


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_weights(tmp_path: Path, prepared_path: Path) -> None:
    params = _params(tmp_path, epochs=4)
    whole = _train(tmp_path, prepared_path, "whole", params)
    assert whole.wait(timeout=600) == 0, whole.stderr.read()

    killed = _train(tmp_path, prepared_path, "killed", params)
    deadline = time.monotonic() + 600
    while _epochs_saved(tmp_path / "killed-state.pt") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(killed.pid, signal.SIGKILL)  # mid-way through epoch 3, without any chance to clean up
    killed.wait()
    assert not (tmp_path / "killed.pt").exists()
    saved = _epochs_saved(tmp_path / "killed-state.pt")
    assert 2 <= saved < 4

    resumed = _train(tmp_path, prepared_path, "killed", params)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert f"resuming after epoch {saved}" in err
    a = torch.load(tmp_path / "whole.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "killed.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    history = [
        yaml.safe_load(p.read_text()) for p in (tmp_path / "whole.json", tmp_path / "killed.json")
    ]
    assert history[0]["val/top1_last"] == history[1]["val/top1_last"]


def test_a_state_from_another_run_is_ignored(
    prepared_path: Path, tiny_params, tmp_path: Path
) -> None:
    data = load_prepared(prepared_path, ("train", "val"))
    cfg = with_changes(tiny_params.train_teacher, "train", epochs=1).train
    state = tmp_path / "state.pt"
    for fingerprint, expected_first in (("run-a", 1), ("run-b", 1)):
        objective = build_objective("vanilla", create_model("resnet8", 10, 1), None, None)
        train = make_batches(data, "train", cfg.batch_size, cfg.augment, CPU, 0)
        val = make_batches(data, "val", cfg.batch_size, None, CPU, 0)
        result = fit(
            objective, train, val, cfg, CPU, "t", FitHooks(resume=ResumeFile(state, fingerprint))
        )
        assert [row["epoch"] for row in result.history] == [expected_first]  # trained, not skipped
    assert torch.load(state, weights_only=True)["fingerprint"] == "run-b"


def test_a_damaged_state_is_one_clear_error(
    prepared_path: Path, tiny_params, tmp_path: Path
) -> None:
    state = tmp_path / "state.pt"
    state.write_bytes(b"PK\x03\x04 broken")
    data = load_prepared(prepared_path, ("train", "val"))
    cfg = tiny_params.train_teacher.train
    objective = build_objective("vanilla", create_model("resnet8", 10, 1), None, None)
    train = make_batches(data, "train", cfg.batch_size, cfg.augment, CPU, 0)
    val = make_batches(data, "val", cfg.batch_size, None, CPU, 0)
    with pytest.raises(CheckpointError, match=r"cannot read training state .*delete it"):
        fit(objective, train, val, cfg, CPU, "t", FitHooks(resume=ResumeFile(state, "x")))


def test_the_code_fingerprint_follows_the_files_the_run_imports(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    used, unused = tmp_path / "a.py", tmp_path / "sub" / "b.py"
    used.write_text("x = 1\n")
    unused.write_text("y = 2\n")
    first = code_fingerprint([used], tmp_path)
    unused.write_text("y = 3\n")  # a module the run never imported: the state stays valid
    assert code_fingerprint([used], tmp_path) == first
    used.write_text("x = 2\n")
    assert code_fingerprint([used], tmp_path) != first
    # By default: the pipeline modules this process has loaded, training among them.
    loaded = loaded_sources()
    assert Path(training.__file__).resolve() in loaded
    assert all(p.is_relative_to(Path(training.__file__).resolve().parents[1]) for p in loaded)
    assert code_fingerprint() == code_fingerprint(loaded)


def test_a_finished_state_written_by_other_code_is_not_resumed(
    prepared_path: Path,
    tiny_params,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # After a code edit `dvc repro` reruns the stage; the old code's finished state must not
    # stand in for the new code's results.
    cfg = dataclasses.replace(
        tiny_params.train_teacher,
        arch="resnet8",
        train=dataclasses.replace(tiny_params.train_teacher.train, epochs=1),
    )
    extras = Extras(state=tmp_path / "state.pt")
    caplog.set_level(logging.INFO)
    run_teacher(prepared_path, cfg, CPU, extras)
    run_teacher(prepared_path, cfg, CPU, extras)
    assert "resuming after epoch 1" in caplog.text  # same code: the finished run is reused
    caplog.clear()
    monkeypatch.setattr(training, "code_fingerprint", lambda: "the code after an edit")
    run_teacher(prepared_path, cfg, CPU, extras)
    assert "resuming" not in caplog.text and "epoch 1/1" in caplog.text  # trained afresh
