"""The benchmark commands run end to end on tiny inputs and write what they promise."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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


def _comparison_repo(tmp_path: Path) -> Path:
    """The comparison's DVC project in a fresh git repository, on a tiny budget: 2 methods x 2
    seeds, one epoch of the tiny profile's schedule, a generated Fashion-MNIST."""
    repo = tmp_path / "repo"
    made = ("work", "runs", "dvc.lock", "teacher.json", "results.json")
    ignore = shutil.ignore_patterns("__pycache__", "cache", "tmp", "config.local", *made)
    for folder in ("pipeline", "benchmarks"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=ignore)
    write_fashion_mnist(repo / "data" / "raw" / "fashion_mnist", n_train=300, n_test=80)
    tiny = yaml.safe_load(TINY_PARAMS.read_text())
    one_epoch = {**tiny["distill"]["train"], "epochs": 1}  # the plumbing, not the accuracy
    bench = {
        "seeds": [0, 1],
        "methods": ["vanilla", "sokd"],
        "method": {"vanilla": {"objective": "vanilla"}, "sokd": {"objective": "sokd"}},
        "pipeline": {
            "seed": 0,
            "runtime": tiny["runtime"],
            "prepare": {"val_size": 100},
            "train_teacher": {"arch": "resnet20", "train": one_epoch},
            "distill": {"train": one_epoch},
        },
    }
    (repo / "benchmarks" / "comparison" / "params.yaml").write_text(yaml.safe_dump(bench))
    for args in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "b"]):
        _command(args, repo)
    return repo


def _command(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result


def test_comparison_benchmark_is_a_dvc_pipeline_of_paired_runs(tmp_path: Path) -> None:
    bench = _comparison_repo(tmp_path) / "benchmarks" / "comparison"
    first = _command(["dvc", "repro"], bench)
    ran = set(re.findall(r"Running stage '([^']+)'", first.stdout))
    runs = {f"run@{m}-{s}" for m in ("vanilla", "sokd") for s in (0, 1)}
    assert ran == {"prepare", "teacher", "summary"} | runs
    results = json.loads((bench / "results.json").read_text())
    assert len(results["rows"]) == 4
    for row in results["rows"]:
        assert row["test_top1_best"] >= row["test_top1_last"]
        assert len(row["val"]) == len(row["test"]) == 1 and row["best_epoch"] == 1
    sokd = [r for r in results["rows"] if r["method"] == "sokd"]
    assert all(r["trainable_params_added"] > 0 for r in sokd)  # the bridge
    versus = results["paired_vs_sokd"]["vanilla"]["last"]
    by_seed = {(r["method"], r["seed"]): 100 * r["test_top1_last"] for r in results["rows"]}
    diffs = [by_seed["sokd", s] - by_seed["vanilla", s] for s in (0, 1)]
    assert versus["n"] == 2 and versus["mean"] == pytest.approx(sum(diffs) / 2)
    assert versus["low"] <= versus["mean"] <= versus["high"]
    from benchmarks.compare_report import table, verdicts

    report = table(results) + verdicts(results)  # what make docs renders into docs/comparison.md
    assert "| sokd |" in report and "| vanilla |" in report and "SOKD − vanilla = " in report
    assert (
        results["rows"][0]["machine"]["cores"]
        and results["machine"] == results["rows"][0]["machine"]
    )
    assert (bench / "val_top1.png").stat().st_size > 0
    # DVC's own records hold every run, and a second repro trains nothing.
    shown = json.loads(_command(["dvc", "metrics", "show", "--json"], bench).stdout)
    files = {f for rev in shown.values() for f in rev["data"]}
    assert {f"runs/{m}/{s}.json" for m in ("vanilla", "sokd") for s in (0, 1)} <= files
    assert "Running stage" not in _command(["dvc", "repro"], bench).stdout
    # A changed method reruns its own runs and the report, nothing else.
    params = yaml.safe_load((bench / "params.yaml").read_text())
    params["method"]["sokd"]["with"] = {"bridge_lr_mult": 0.5}
    (bench / "params.yaml").write_text(yaml.safe_dump(params))
    again = _command(["dvc", "repro"], bench)
    assert set(re.findall(r"Running stage '([^']+)'", again.stdout)) == {
        "run@sokd-0",
        "run@sokd-1",
        "summary",
    }


def test_user_path_teacher_data_adds_its_own_photos_and_keeps_the_students_splits(
    tmp_path: Path,
) -> None:
    import torch

    from benchmarks.user_path import with_teacher_photos, write_photos
    from pipeline.core.config import PrepareConfig
    from pipeline.data.datasets import prepare

    raw = write_fashion_mnist(tmp_path / "raw", n_train=400, n_test=100)
    per_class = {"train_per_class": 3, "test_per_class": 2, "teacher_per_class": 4}
    counts = write_photos(raw, tmp_path / "photos", per_class)
    assert counts == {"train": 30, "val": 20, "teacher": 40}
    cfg = PrepareConfig(dataset="imagefolder", val_size=10, image_size=16, resize="shorter_side")
    students = prepare(tmp_path / "photos", cfg, seed=0)
    teacher = with_teacher_photos(students, tmp_path / "photos" / "teacher", 16, "shorter_side")
    added = teacher["train"]["labels"][len(students["train"]["labels"]) :]
    assert torch.bincount(added).tolist() == [4] * 10  # each photo under its own class
    assert teacher["train"]["images"].shape == (20 + 40, 3, 16, 16)
    for split in ("val", "test"):  # the students' validation and test photos, as they were
        assert torch.equal(teacher[split]["images"], students[split]["images"])
    assert (teacher["mean"], teacher["std"]) == (students["mean"], students["std"])
