"""The README's figures are the committed results' own (the quickstart's metrics, the comparison
benchmark's report): a rebuild that changes a result fails here until the prose says the same."""

import functools
import itertools
import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def _committed(path: str) -> str:
    """`path` as committed: a user's own rebuild (other CPU, other numbers) is not the README's."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: what was committed is unknown")
    # safe.directory: CI runs as root on a clone that may belong to another user.
    git = ["git", "-c", f"safe.directory={ROOT}", "show", f"HEAD:{path}"]
    return subprocess.run(git, cwd=ROOT, capture_output=True, text=True, check=True).stdout


def _metrics(path: str) -> dict[str, float]:
    return json.loads(_committed(path))


def _quickstart() -> str:
    """The README's quickstart section."""
    section = _committed("README.md").split("## What the quickstart produces")[1]
    return section.split("\n## ")[0]


def _row(role: str) -> list[str]:
    """Cells of the quickstart table's row whose role column starts with `role`."""
    for line in _quickstart().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[1].startswith(role):
            return cells
    raise AssertionError(f"the README's quickstart table has no row for {role!r}")


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.2f} %"


NETWORKS = {
    "teacher (": "teacher",
    "student, cross-entropy only": "vanilla/student",
    "student, **SOKD**": "sokd/student",
    "SOKD improved teacher": "sokd/improved_teacher",
}


@pytest.mark.parametrize(("role", "key"), NETWORKS.items())
def test_each_network_row_is_the_committed_evaluation(role: str, key: str) -> None:
    evaluate = _metrics("metrics/evaluate.json")
    _, _, params, macs, top1, top5 = _row(role)
    assert params == f"{evaluate[f'{key}/params']:,}"
    assert macs == f"{evaluate[f'{key}/macs'] / 1e6:.1f} M"
    assert top1.strip("*") == _percent(evaluate[f"{key}/top1"])
    assert top5 == _percent(evaluate[f"{key}/top5"])


def test_the_deployed_files_rows_are_the_committed_verification() -> None:
    verify = _metrics("metrics/verify.json")
    assert _row("the SOKD student under onnxruntime")[4] == _percent(verify["onnx/top1"])
    int8 = _row("the same, static INT8")
    assert int8[4] == _percent(verify["int8/top1"])
    assert f"({verify['int8/size_ratio']:.1f}× smaller file)" in int8[1]


def test_the_sentences_under_the_table_quote_the_same_run() -> None:
    evaluate, verify = _metrics("metrics/evaluate.json"), _metrics("metrics/verify.json")
    sokd = _metrics("metrics/distill/sokd.json")
    student, teacher = "sokd/student", "teacher"
    params = evaluate[f"{teacher}/params"] / evaluate[f"{student}/params"]
    macs = evaluate[f"{teacher}/macs"] / evaluate[f"{student}/macs"]
    logit = f"{verify['onnx/max_abs_logit_diff']:.1e}".replace("e-0", "e-")
    drop = -100 * verify["int8/top1_drop"]
    before, after = (sokd[f"bn/student/val_top1_{k}"] for k in ("before", "after"))
    stages = {"teacher": "train_teacher", "vanilla": "distill/vanilla", "sokd": "distill/sokd"}
    epoch = {k: round(_metrics(f"metrics/{v}.json")["time/epoch_s"]) for k, v in stages.items()}
    for sentence in (
        f"{params:.1f}× fewer parameters and {macs:.1f}× fewer MACs",
        f"SOKD adds {100 * evaluate[f'{student}/gain_over_vanilla']:.2f} points",
        f"validation top-1 {_percent(before)} → {_percent(after)}",
        f"agrees with torch on {100 * verify['onnx/agreement']:.0f} %",
        f"max |Δlogit| {logit}",
        f"teacher epoch {epoch['teacher']} s, `vanilla` {epoch['vanilla']} s, "
        f"`sokd` {epoch['sokd']} s",
        f"the INT8 file on {_percent(verify['int8/agreement'])}, {abs(drop):.2f} points of top-1 "
        f"*{'above' if drop >= 0 else 'below'}* torch",
    ):
        assert sentence in " ".join(_quickstart().split()), sentence


def _table(markdown: str) -> list[str]:
    """The first markdown table in `markdown`, one string per row."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    return list(itertools.takewhile(lambda ln: ln.startswith("|"), lines[start:]))


def test_the_comparison_table_is_the_benchmarks_own_report() -> None:
    section = _committed("README.md").split("## What SOKD buys")[1].split("\n## ")[0]
    report = _committed("benchmarks/comparison/RESULTS.md")
    assert _table(section) == _table(report)
    teacher = _metrics("benchmarks/comparison/teacher.json")
    assert f"{_percent(teacher['test_top1_last'])} test top-1" in " ".join(section.split())
