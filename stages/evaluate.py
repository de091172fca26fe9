from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages.common import MetricsOption, ParamsOption, RecordOption, log, one_line_errors, setup

app = typer.Typer()


@app.command("evaluate")
@one_line_errors
def evaluate(
    data: Annotated[
        Path, typer.Option(help="Prepared dataset (.pt); only its test split is read.")
    ],
    teacher: Annotated[Path, typer.Option(help="Teacher checkpoint.")],
    runs: Annotated[
        Path,
        typer.Option(
            help="Folder of `distill` outputs: <runs>/<objective> (or <runs>/<objective>/<arch>)."
        ),
    ],
    metrics: MetricsOption,
    plots: Annotated[
        Path,
        typer.Option(help="Folder for confusion/<run>.csv (DVC's template) and images/*.png."),
    ],
    record: RecordOption = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Test-set accuracy, size, MACs and teacher agreement of every network, in fp32."""
    from pipeline.core.files import write_metrics
    from pipeline.core.students import student_runs
    from pipeline.training.evaluation import evaluate_all

    p, runtime = setup(params, "evaluate", outputs=(record, metrics))
    run_dirs = student_runs(runs, p.distill.objectives)
    result = evaluate_all(data, teacher, run_dirs, p.evaluate, runtime, plots)
    write_metrics(record, metrics, result, ("teacher/top1", "*/student/top1"))
    for key in [k for k in result if k.endswith("/top1")]:
        log.info("%-32s top-1 %.2f%%", key.removesuffix("/top1"), 100 * result[key])
