"""The budget benchmark's definitions and its report's arithmetic (benchmarks/budget_search.py);
its cells run as experiments of the pipeline (`python -m benchmarks.experiments queue budget_*`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.budget_search import summary, table
from benchmarks.experiments import cells, definition
from pipeline.core.config import read_yaml
from pipeline.core.template import preset_overrides

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["budget_fmnist", "budget_photos"])
def test_every_cell_is_a_valid_overlay_with_a_budget_and_five_candidates(name: str) -> None:
    grid = cells(name, definition(name))
    assert len(grid) == 9  # three budgets x three seeds
    params = read_yaml(ROOT / "params.yaml")
    for _, overlay in grid.values():
        preset_overrides(overlay, params)  # raises on a key params.yaml does not have
        assert any(overlay["budget"].values())
        distill = overlay["distill"]
        assert len(distill["candidates"]) >= 5 and distill["arch"] in distill["candidates"]


def _cell(budget: str, seed: int, tops: dict[str, float], shipped: str, passed: bool) -> dict:
    students = {
        f"sokd/{a}": {"arch": a, "val_top1": t, "test_top1": t, "train_s": 10.0 * (i + 1)}
        for i, (a, t) in enumerate(tops.items())
    }
    return {
        "budget_name": budget,
        "seed": seed,
        "default_arch": "b",
        "candidates": {key: {} for key in "abc"},
        "students": students,
        "shipped": f"sokd/{shipped}",
        "budget_passed": passed,
        "gate_passed": True,
        "profile_s": 5.0,
        "select_s": 5.0,
    }


def test_the_report_counts_met_budgets_and_pairs_the_shipped_student_by_seed() -> None:
    cells_ = {
        "loose-s0": _cell("loose", 0, {"a": 0.80, "b": 0.85}, "b", True),
        "loose-s1": _cell("loose", 1, {"a": 0.82, "b": 0.81}, "b", False),
        "tight-s0": _cell("tight", 0, {"a": 0.80}, "a", True),
        "tight-s1": _cell("tight", 1, {"a": 0.79}, "a", True),
    }
    s = summary(cells_)
    loose, tight = s["loose"], s["tight"]
    assert loose["met"] == 1 and tight["met"] == 2
    # The oracle is the best test top-1 trained: seed 1 shipped b (81 %) where a had 82 %.
    assert loose["shipped_minus_oracle"]["mean"] == pytest.approx(-0.5)
    assert loose["shipped_minus_default"]["mean"] == pytest.approx(0.0)
    assert tight["default_within_budget"] == 0 and tight["shipped_minus_default"] is None
    # Search: profile 5 s + export 5 s + every student's training, over b's 20 s alone.
    assert loose["cost_vs_one_student"][0] == pytest.approx((5 + 5 + 10 + 20) / 20)
    assert tight["cost_vs_one_student"][0] == pytest.approx((5 + 5 + 10) / 20)
    rendered = table({"summary": s, "budgets": {"loose": {"max_bytes": 10**6}, "tight": {}}})
    assert "| loose: ≤ 1,000,000 bytes | 1/2 |" in rendered and "| 2/2 |" in rendered


def test_a_cell_reads_students_by_folder_so_timm_names_resolve(tmp_path: Path) -> None:
    """The stages record a `timm:` student under its folder name (`timm_x`); a cell reads those
    records as an experiment's commit holds them and keeps the architecture's own name."""
    import json
    import subprocess

    from benchmarks.budget_search import cell

    arch, folder = "timm:mobilenetv3_small_050", "timm_mobilenetv3_small_050"
    name = f"sokd/{folder}"
    records = {
        "profile": {f"{arch}/{k}": v for k, v in
                    (("within_budget", True), ("int8_p90_ms", 0.4), ("bytes", 7), ("macs", 9))}
        | {"profile/time_s": 30.0},
        "export": {"selection/objective": name, f"selection/{name}/val_top1": 0.7,
                   "selection/time_s": 5.0, "selection/latency_p90_ms": 0.41},
        "evaluate": {f"{name}/student/top1": 0.69},
        "verify": {"budget/file": "int8", "int8/top1": 0.68, "budget/passed": True,
                   "gate/passed": True, "budget/latency_p90_ms": 0.42, "budget/bytes": 7,
                   "machine/cpu": "x"},
        "distill/sokd": {f"{folder}/time/train_s": 60.0},
    }  # fmt: skip
    for stage, figures in records.items():
        path = tmp_path / "records" / f"{stage}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(figures))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "cell"]):
        subprocess.run([*git, *args], check=True)
    overlay = {"distill": {"arch": arch, "objectives": ["sokd"], "candidates": [arch]},
               "budget": {"latency_ms": 1.0}}  # fmt: skip
    got = cell("HEAD", overlay, tmp_path)
    assert got["students"][name]["arch"] == arch and got["students"][name]["train_s"] == 60.0
    assert got["shipped"] == name and got["export_latency_p90_ms"] == 0.41
    assert got["students"][name]["why_not"] == "shipped"
