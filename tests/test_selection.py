"""Which student ships: the best on validation, ties to the first listed, and the diagnoses."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.config import ExportConfig
from pipeline.core.errors import CheckpointError, ConfigError
from pipeline.data.datasets import load_prepared
from pipeline.models import create_model
from pipeline.models.checkpoint import load_checkpoint, save_checkpoint
from pipeline.shipping.selection import choose_student, diagnose, pick, select_student


def test_best_ships_the_highest_validation_top1() -> None:
    name, reason = pick("best", {"vanilla": 0.71, "kd": 0.70, "sokd": 0.74})
    assert name == "sokd"
    assert "74.00 %" in reason and "vanilla 71.00 %" in reason and "kd 70.00 %" in reason


def test_a_tie_goes_to_the_first_objective_listed() -> None:
    assert pick("best", {"kd": 0.7, "sokd": 0.7, "vanilla": 0.7})[0] == "kd"
    assert pick("best", {"sokd": 0.7, "kd": 0.7})[0] == "sokd"
    reason = pick("best", {"kd": 0.7, "sokd": 0.7, "vanilla": 0.6})[1]
    assert "tied with sokd: the first in distill.objectives ships" in reason
    assert "tied" not in pick("best", {"kd": 0.7, "sokd": 0.71})[1]


def test_naming_an_objective_still_ships_it() -> None:
    name, reason = pick("sokd", {"vanilla": 0.8, "sokd": 0.7})
    assert name == "sokd" and "export.objective: sokd" in reason
    with pytest.raises(ConfigError, match="'dkd' was not trained"):
        pick("dkd", {"vanilla": 0.8, "sokd": 0.7})


def test_a_weak_teacher_is_named_with_its_fix() -> None:
    notes = diagnose({"vanilla": 0.70, "sokd": 0.72}, 0.715, "sokd", 0.03, 3)
    assert len(notes) == 1
    assert "not clearly above the vanilla student" in notes[0]
    assert "train_teacher.train.epochs" in notes[0] and "train_teacher.weights" in notes[0]
    assert diagnose({"vanilla": 0.70, "sokd": 0.72}, 0.74, "sokd", 0.03, 3) == []


def test_distillation_that_did_not_pay_off_says_so_and_why() -> None:
    val = {"vanilla": 0.715, "kd": 0.702, "sokd": 0.686}
    strong = diagnose(val, 0.80, "vanilla", 0.03, 3)
    assert len(strong) == 1 and "every distilled student ended below vanilla" in strong[0]
    assert "kd 70.20 %, sokd 68.60 %" in strong[0] and "3 student epoch(s)" in strong[0]
    assert "distill.train.epochs" in strong[0]
    weak = diagnose(val, 0.72, "vanilla", 0.03, 3)  # the teacher is the likelier cause
    assert len(weak) == 2 and "teacher this close" in weak[1]


def test_a_named_objective_below_vanilla_is_flagged() -> None:
    notes = diagnose({"vanilla": 0.72, "kd": 0.74, "sokd": 0.70}, 0.85, "sokd", 0.03, 3)
    assert len(notes) == 1 and "export.objective ships sokd" in notes[0]


def test_without_a_vanilla_student_nothing_is_diagnosed() -> None:
    assert diagnose({"kd": 0.5, "sokd": 0.4}, 0.45, "kd", 0.03, 3) == []


def test_selection_metrics_name_every_candidate() -> None:
    s = select_student("best", {"vanilla": 0.7, "sokd": 0.75}, 0.8, 0.03, 2)
    m = s.metrics()
    assert m["selection/objective"] == "sokd" and m["selection/notes"] == ""
    assert m["selection/vanilla/val_top1"] == 0.7 and m["selection/teacher/val_top1"] == 0.8


def _checkpoint(path: Path, role: str, data, metrics: dict, arch: str = "resnet8") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        path,
        create_model(arch, 10, 1),
        arch=arch,
        role=role,
        data=data,
        params={"train": {"epochs": 2}},
        metrics=metrics,
    )


def test_choose_student_reads_each_runs_recorded_validation_top1(
    prepared_path: Path, tmp_path: Path
) -> None:
    data = load_prepared(prepared_path, ("train", "val"))
    _checkpoint(tmp_path / "teacher.pt", "teacher", data, {"val/top1_final": 0.9})
    for name, top1 in (("vanilla", 0.8), ("kd", 0.78), ("sokd", 0.83)):
        _checkpoint(
            tmp_path / "runs" / name / "student.pt", "student", data, {"val/top1_final": top1}
        )
    runs, teacher = tmp_path / "runs", tmp_path / "teacher.pt"
    selection, chosen = choose_student(runs, ["vanilla", "kd", "sokd"], teacher, ExportConfig())
    assert selection.objective == "sokd" and chosen == runs / "sokd" / "student.pt"
    assert selection.teacher_val_top1 == 0.9 and selection.notes == []
    # Only the listed objectives compete: sokd left out of the list cannot ship.
    selection, _ = choose_student(runs, ["vanilla", "kd"], teacher, ExportConfig())
    assert selection.objective == "vanilla" and "every distilled student" in selection.notes[0]
    assert load_checkpoint(chosen).role == "student"
    with pytest.raises(CheckpointError, match="student not found"):
        choose_student(runs, ["vanilla", "dkd"], teacher, ExportConfig())


# With distill.candidates: one student per objective and architecture, named `<objective>/<arch>`.
CANDIDATE_RUNS = {
    "vanilla/lenet5": 0.70,
    "vanilla/resnet8": 0.74,
    "sokd/lenet5": 0.76,
    "sokd/resnet8": 0.76,
}


def test_a_tie_across_architectures_goes_to_the_faster_file() -> None:
    p90 = {
        "vanilla/lenet5": 0.05,
        "vanilla/resnet8": 0.06,
        "sokd/lenet5": 0.05,
        "sokd/resnet8": 0.06,
    }
    name, reason = pick("best", CANDIDATE_RUNS, p90)
    assert name == "sokd/lenet5" and "tied with sokd/resnet8: the faster ships" in reason
    slower_first = {**p90, "sokd/lenet5": 0.07}
    assert pick("best", CANDIDATE_RUNS, slower_first)[0] == "sokd/resnet8"


def test_every_student_not_shipped_says_why() -> None:
    p90 = {"sokd/lenet5": 0.05, "sokd/resnet8": 0.06}
    s = select_student("best", CANDIDATE_RUNS, 0.9, 0.03, 2, p90)
    assert s.objective == "sokd/lenet5"
    assert s.why_not["vanilla/lenet5"] == "lower validation top-1 (70.00 % < 76.00 %)"
    assert s.why_not["sokd/resnet8"].startswith("tied on validation top-1, slower")
    assert "sokd/lenet5" not in s.why_not
    assert s.metrics()["selection/vanilla/resnet8/why_not"].startswith("lower validation top-1")


def test_a_named_objective_ships_its_best_architecture() -> None:
    name, reason = pick("vanilla", CANDIDATE_RUNS)
    assert name == "vanilla/resnet8" and "among vanilla's students" in reason
    why = select_student("vanilla", CANDIDATE_RUNS, 0.9, 0.03, 2).why_not
    assert why["sokd/lenet5"] == "export.objective names vanilla"


def test_diagnoses_compare_students_of_the_shipped_architecture() -> None:
    # sokd/resnet8 is below vanilla/resnet8: distillation did not pay off on that architecture,
    # whatever vanilla/lenet5 did.
    val = {
        "vanilla/lenet5": 0.60,
        "vanilla/resnet8": 0.80,
        "sokd/lenet5": 0.65,
        "sokd/resnet8": 0.78,
    }
    notes = select_student("best", val, 0.95, 0.03, 2).notes
    assert len(notes) == 1 and "every distilled student ended below vanilla" in notes[0]
    assert "sokd 78.00 % < 80.00 %" in notes[0]


def test_choose_student_weighs_every_trained_architecture(
    prepared_path: Path, tmp_path: Path
) -> None:
    data = load_prepared(prepared_path, ("train", "val"))
    _checkpoint(tmp_path / "teacher.pt", "teacher", data, {"val/top1_final": 0.9})
    runs = tmp_path / "runs"
    for name, top1 in CANDIDATE_RUNS.items():
        objective, arch = name.split("/")
        path = runs / objective / arch / "student.pt"
        _checkpoint(path, "student", data, {"val/top1_final": top1}, arch)
    int8_p90 = {"lenet5": 0.08, "resnet8": 0.06}  # profile's figures, by architecture
    selection, chosen = choose_student(
        runs, ["vanilla", "sokd"], tmp_path / "teacher.pt", ExportConfig(), int8_p90
    )
    assert selection.objective == "sokd/resnet8" and selection.arch == "resnet8"
    assert chosen == runs / "sokd" / "resnet8" / "student.pt"
    assert selection.metrics()["selection/arch"] == "resnet8"


def test_with_a_budget_the_best_student_whose_shipped_file_meets_it_ships(
    prepared_path: Path, tiny_params, tmp_path: Path
) -> None:
    """Each student is made into its shipped file (export, then INT8 under the accuracy control)
    and measured: the better one on validation is larger, so a size limit between the two files
    ships the other and says why; a limit below both stops, naming the closest."""
    from pipeline.core.errors import GateError
    from pipeline.shipping.profile import shipped_cost
    from tests.conftest import with_changes

    data = load_prepared(prepared_path, ("train", "val"))
    _checkpoint(tmp_path / "teacher.pt", "teacher", data, {"val/top1_final": 0.9})
    runs = tmp_path / "runs"
    for arch, top1 in (("resnet20", 0.80), ("lenet5", 0.76)):
        path = runs / "sokd" / arch / "student.pt"
        _checkpoint(path, "student", data, {"val/top1_final": top1}, arch)
    reports: dict[str, dict] = {}

    def fits_under(max_bytes: int):
        p = with_changes(tiny_params, "budget", max_bytes=max_bytes)
        work = tmp_path / f"work{max_bytes}"

        def fits(name: str, checkpoint: Path) -> dict:
            reports[name] = shipped_cost(name, checkpoint, data, p, work)
            return reports[name]

        return fits

    teacher, cfg = tmp_path / "teacher.pt", ExportConfig()
    with pytest.raises(GateError, match="no student's shipped file meets the budget") as err:
        choose_student(runs, ["sokd"], teacher, cfg, fits=fits_under(1))
    sizes = {name: r["budget/bytes"] for name, r in reports.items()}
    assert sizes["sokd/resnet20"] > sizes["sokd/lenet5"]  # both measured, the larger first
    assert "the closest, sokd/lenet5:" in str(err.value)
    between = (sizes["sokd/resnet20"] + sizes["sokd/lenet5"]) // 2
    selection, chosen = choose_student(runs, ["sokd"], teacher, cfg, fits=fits_under(between))
    assert selection.objective == "sokd/lenet5" and chosen.parent.name == "lenet5"
    assert selection.why_not["sokd/resnet20"].startswith("over budget once shipped (")
    assert "over budget: sokd/resnet20" in selection.reason
    assert "the only one within budget" in selection.reason  # two were trained
    assert selection.val_top1 == {"sokd/lenet5": 0.76, "sokd/resnet20": 0.80}
    # With room for both, the better one ships and the other is never quantized.
    reports.clear()
    selection, _ = choose_student(runs, ["sokd"], teacher, cfg, fits=fits_under(10**9))
    assert selection.objective == "sokd/resnet20" and list(reports) == ["sokd/resnet20"]


def test_verify_allows_its_latency_tolerance_and_export_chooses_without_it(
    prepared_path: Path, tiny_params, tmp_path: Path
) -> None:
    """The gate's tolerance on the latency limit, on one file's real onnxruntime figure (read
    back through `budget.latencies_from`, so each check sees the same number): verify passes a
    file at 0.8x the budget and fails one at 1.3x; at 1.1x verify would pass it, but export,
    which must leave verify that headroom, does not ship it."""
    import json

    from pipeline.core.config import BudgetConfig
    from pipeline.shipping.profile import LATENCY_TOLERANCE, hold_budget, shipped_cost
    from tests.conftest import with_changes

    assert 1.1 < LATENCY_TOLERANCE < 1.3
    data = load_prepared(prepared_path, ("train", "val"))
    checkpoint = tmp_path / "runs" / "sokd" / "lenet5" / "student.pt"
    _checkpoint(checkpoint, "student", data, {"val/top1_final": 0.7}, "lenet5")
    measured = shipped_cost("sokd/lenet5", checkpoint, data, tiny_params, tmp_path / "w0")
    p90, int8 = measured["budget/latency_p90_ms"], tmp_path / "w0" / "sokd_lenet5" / "int8.onnx"
    assert measured["budget/passed"] and measured["budget/file"] == "int8" and p90 > 0
    figures = tmp_path / "latencies.json"
    figures.write_text(json.dumps({"files": {"lenet5|int8": {"p50_ms": p90, "p90_ms": p90}}}))
    ckpt = load_checkpoint(checkpoint)
    shape, model = (ckpt.in_channels, *ckpt.image_size), ckpt.build()

    def budget_at(ratio: float) -> BudgetConfig:  # the file's figure at `ratio` x the limit
        return BudgetConfig(latency_ms=p90 / ratio, latencies_from=str(figures))

    def verify_passes(ratio: float) -> bool:
        report = hold_budget(model, "lenet5", {"int8": int8}, shape, budget_at(ratio))
        assert report["budget/latency_p90_ms"] == p90
        return report["budget/passed"]

    def export_ships(ratio: float) -> bool:
        p = with_changes(tiny_params, "budget", **vars(budget_at(ratio)))
        return shipped_cost("sokd/lenet5", checkpoint, data, p, tmp_path / f"w{ratio}")[
            "budget/passed"
        ]

    assert verify_passes(0.8) and not verify_passes(1.3)
    assert verify_passes(1.1) and not export_ships(1.1)
    assert export_ships(0.95)
    # Measured here: a reading over the limit is taken again (a slow spell of a shared machine
    # rarely spans two); a file far within the budget is read once, one far over it misses twice.
    within = hold_budget(model, "lenet5", {"int8": int8}, shape, BudgetConfig(latency_ms=10 * p90))
    over = hold_budget(model, "lenet5", {"int8": int8}, shape, BudgetConfig(latency_ms=p90 / 3))
    assert within["budget/passed"] and within["budget/latency_readings"] == 1
    assert not over["budget/passed"] and over["budget/latency_readings"] == 2
    assert "budget.latency_ms" in over["budget/failures"]
