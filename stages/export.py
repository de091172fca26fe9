from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from stages.common import MetricsOption, ParamsOption, RecordOption, log, one_line_errors, setup

app = typer.Typer()


@app.command("export")
@one_line_errors
def export(
    runs: Annotated[
        Path, typer.Option(help="Folder of `distill` outputs: <runs>/<objective>/student.pt.")
    ],
    teacher: Annotated[Path, typer.Option(help="Teacher checkpoint (its validation top-1).")],
    student: Annotated[Path, typer.Option(help="Where the shipped student's checkpoint goes.")],
    out: Annotated[Path, typer.Option(help="ONNX file to write.")],
    metrics: MetricsOption,
    record: RecordOption = None,
    profile: Annotated[
        Path | None,
        typer.Option(help="profile's record: ties on validation go to the faster INT8 file."),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="Prepared dataset: with a budget, students are quantized to check it."),
    ] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Ship the best student on validation (or the one named) whose shipped file meets the
    budget: its checkpoint and ONNX file."""
    from pipeline.core.errors import ConfigError
    from pipeline.core.files import copy_file, read_json, scratch_dir, write_metrics
    from pipeline.models.checkpoint import load_checkpoint
    from pipeline.shipping.onnx import export_onnx
    from pipeline.shipping.selection import choose_student

    p, _ = setup(params, "export", outputs=(out, student, record, metrics))
    int8_p90 = None
    if profile is not None:
        figures = read_json(profile, ConfigError, "profile's record", "run `dvc repro profile`")
        int8_p90 = {k.removesuffix("/int8_p90_ms"): v for k, v in figures.items()
                    if k.endswith("/int8_p90_ms")}  # fmt: skip
    start, held = time.perf_counter(), {}
    with scratch_dir(out.parent, "export") as work:
        fits = budget_check(p, data, work, held) if p.budget.limited else None
        selection, chosen = choose_student(
            runs, p.distill.objectives, teacher, p.export, int8_p90, fits
        )
    chose_s = time.perf_counter() - start  # with a budget: every student's file made and timed
    # Export's own reading of the shipped file, beside verify's second one (budget/ in verify).
    shipped = held.get(selection.objective, {})
    budget = {f"selection/{k.removeprefix('budget/')}": v for k, v in shipped.items()
              if k in ("budget/latency_p90_ms", "budget/bytes")}  # fmt: skip
    for note in selection.notes:
        log.warning("warning: %s", note)
    # ONNX first: a student that must not ship (NaN weights, not a student) leaves no copy.
    report = export_onnx(load_checkpoint(chosen), out, p.export)
    copy_file(chosen, student)  # the same bytes: the ONNX file's recorded SHA-256 holds for it
    write_metrics(
        record,
        metrics,
        selection.metrics() | report | budget | {"selection/time_s": chose_s},
        ("selection/objective", "selection/arch"),
    )
    log.info(
        "shipping %s (%s): %s; wrote %s and %s (%d bytes, %s exporter, opset %d)",
        selection.objective,
        selection.arch,
        selection.reason,
        student,
        out,
        report["onnx/file_bytes"],
        p.export.exporter,
        p.export.opset,
    )


def budget_check(p: Any, data: Path | None, work: Path, held: dict[str, Any]) -> Any:
    """The budget test each student's shipped file takes, made in `work`, before one ships;
    each student's report lands in `held`."""
    from pipeline.core.errors import ConfigError
    from pipeline.data.datasets import load_prepared
    from pipeline.shipping.profile import shipped_cost

    if data is None:
        raise ConfigError("a budget is set: give export --data (the prepared dataset)")
    splits = load_prepared(data, ("train", "val"))

    def fits(name: str, checkpoint: Path) -> dict[str, Any]:
        held[name] = shipped_cost(name, checkpoint, splits, p, Path(work))
        return held[name]

    return fits
