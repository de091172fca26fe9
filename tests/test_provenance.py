"""The model card's provenance: the commit without a spurious -dirty, and library versions."""

import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.shipping.model_card import git_commit, library_versions, run_outputs
from tests.conftest import ROOT


def _git(*args: str, cwd: Path) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env |= {"GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    for name in ("dvc.lock", "metrics/distill/sokd.json", "plots/evaluate/images/x.png", "code.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("v1\n")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "MODEL_CARD.md").write_text("v1\n")
    _git("init", "-q", cwd=tmp_path)
    _git("add", "-A", cwd=tmp_path)
    _git("commit", "-qm", "first", cwd=tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_files_the_run_rewrites_do_not_make_the_commit_dirty(repo: Path) -> None:
    head = _git("rev-parse", "HEAD", cwd=repo)
    for name in ("dvc.lock", "metrics/distill/sokd.json", "plots/evaluate/images/x.png"):
        (repo / name).write_text("v2\n")
    (repo / "models" / "MODEL_CARD.md").write_text("v2\n")
    assert git_commit() == head


def test_a_real_code_change_is_still_flagged(repo: Path) -> None:
    head = _git("rev-parse", "HEAD", cwd=repo)
    (repo / "dvc.lock").write_text("v2\n")
    (repo / "code.py").write_text("v2\n")
    assert git_commit() == f"{head}-dirty"


def test_run_outputs_cover_every_stage_output_of_dvc_yaml() -> None:
    outputs = run_outputs(ROOT / "dvc.yaml")
    for path in ("dvc.lock", "metrics/evaluate.json", "models/MODEL_CARD.md", "metrics/distill"):
        assert path in outputs
    assert not any("${" in out for out in outputs)


def test_versions_name_the_libraries_that_made_the_artifacts() -> None:
    import onnx
    import torch

    versions = library_versions()
    assert versions["torch"] == torch.__version__.split("+")[0] or versions["torch"].startswith(
        torch.__version__.split("+")[0]
    )
    assert versions["onnx"] == onnx.__version__
    assert set(versions) == {"torch", "torchvision", "onnx", "onnxruntime"}
