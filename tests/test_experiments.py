"""Benchmarks as queued experiments of the real pipeline: `dvc exp run --queue`, `dvc queue start`,
then the report collected from `dvc exp show --json`, in a temporary copy of the repository."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, TINY_PARAMS
from tests.helpers import write_fashion_mnist
from tests.test_pipeline import _run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project on the tiny profile, with a comparison of two methods x two seeds."""
    repo = tmp_path_factory.mktemp("bench")
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    skip = shutil.ignore_patterns("__pycache__", "cache", "tmp", "config.local", "work", "*.json")
    for folder in ("pipeline", "stages", "benchmarks", ".dvc"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=skip)
    shutil.copy(TINY_PARAMS, repo / "params.yaml")
    tiny = yaml.safe_load(TINY_PARAMS.read_text())
    bench = {
        "until": "evaluate",  # as comparison.yaml: nothing of it needs the shipped files
        "pipeline": tiny | {"distill": tiny["distill"] | {"test_curve": True}},
        "grid": {
            "method": {
                "vanilla": {"distill": {"objectives": ["vanilla"]}},
                "sokd": {"distill": {"objectives": ["sokd"]}},
            },
            "seed": {"s0": {"distill": {"seed": 0}}, "s1": {"distill": {"seed": 1}}},
        },
    }
    (repo / "benchmarks" / "comparison.yaml").write_text(yaml.safe_dump(bench))
    write_fashion_mnist(repo / "data" / "raw" / "fashion_mnist", n_train=400, n_test=150)
    for args in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "tiny"]):
        _run(args, repo)
    _run(["dvc", "repro", "fetch"], repo)  # the dataset in DVC's cache, as `make repro` leaves it
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-qm", "fetched"], repo)
    return repo


def _experiments(*args: str, repo: Path) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "benchmarks.experiments", *args], repo)


def test_a_benchmark_is_queued_experiments_collected_into_its_report(bench_repo: Path) -> None:
    queued = _experiments("queue", "comparison", repo=bench_repo)
    names = {f"comparison-{m}-s{s}" for m in ("vanilla", "sokd") for s in (0, 1)}
    assert set(queued.stdout.split()) >= names
    _run(["dvc", "queue", "start"], bench_repo)
    report = _experiments("collect", "comparison", "--wait", repo=bench_repo)
    assert "| sokd |" in report.stdout and "SOKD − vanilla = " in report.stdout
    results = json.loads((bench_repo / "benchmarks" / "comparison.json").read_text())
    rows = results["rows"]
    assert {(r["method"], r["seed"]) for r in rows} == {
        (m, s) for m in ("vanilla", "sokd") for s in (0, 1)
    }
    epochs = yaml.safe_load(TINY_PARAMS.read_text())["distill"]["train"]["epochs"]
    for row in rows:  # test per epoch for the best epoch; the validation curve from plots/
        assert row["test_top1_best"] >= row["test_top1_last"] and len(row["val"]) == epochs
    assert all(r["trainable_params_added"] > 0 for r in rows if r["method"] == "sokd")
    by_seed = {(r["method"], r["seed"]): 100 * r["test_top1_last"] for r in rows}
    versus = results["paired_vs_sokd"]["vanilla"]["last"]
    diffs = [by_seed["sokd", s] - by_seed["vanilla", s] for s in (0, 1)]
    assert versus["n"] == 2 and versus["mean"] == pytest.approx(sum(diffs) / 2)
    # `dvc exp show` lists every cell, and DVC's run cache trained one teacher for all four.
    shown = _run(["dvc", "exp", "show", "--json"], bench_repo).stdout
    assert all(name in shown for name in names)
    logs = "".join(_run(["dvc", "queue", "logs", n], bench_repo).stdout for n in sorted(names))
    assert logs.count("Running stage 'train_teacher'") == 1
    assert "Running stage 'evaluate'" in logs and "Running stage 'export'" not in logs
    assert all(r["machine"]["cores"] >= 1 for r in rows)  # profile's record of the machine
