"""`distill.test_curve`: test top-1 per epoch, reported as best and last, never choosing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.core.config import Params
from pipeline.training.runs import Extras, run_distill, run_teacher, save_run
from tests.conftest import CPU


def _distill(params: Params, prepared: Path, teacher: Path, test_curve: bool):
    cfg = dataclasses.replace(params.distill, test_curve=test_curve)
    return run_distill("kd", prepared, teacher, cfg, CPU)


def test_the_test_curve_is_reported_and_changes_nothing_else(
    tiny_params: Params, prepared_path: Path, tmp_path: Path
) -> None:
    teacher = run_teacher(prepared_path, tiny_params.train_teacher, CPU, Extras())
    save_run(teacher, {"teacher": tmp_path / "teacher.pt"}, tmp_path / "t.json", tmp_path)
    plain = _distill(tiny_params, prepared_path, tmp_path / "teacher.pt", False)
    curved = _distill(tiny_params, prepared_path, tmp_path / "teacher.pt", True)
    rows = curved.fit.history
    assert [r["test/top1"] for r in rows] and "test/top1" not in plain.fit.history[-1]
    best = max(r["test/top1"] for r in rows)
    assert curved.metrics["test/top1_best"] == best >= curved.metrics["test/top1_last"]
    assert curved.metrics["test/top1_last"] == rows[-1]["test/top1"]
    # Measuring test draws nothing and chooses nothing: the same student either way.
    assert curved.metrics["val/top1_final"] == plain.metrics["val/top1_final"]
    same = zip(
        plain.networks["student"][1].state_dict().values(),
        curved.networks["student"][1].state_dict().values(),
        strict=True,
    )
    assert all(a.equal(b) for a, b in same)
    save_run(curved, {}, tmp_path / "m.json", tmp_path, tmp_path / "record.json")
    headline = (tmp_path / "m.json").read_text()
    assert "test/top1_best" in headline and "test/top1_last" in headline
