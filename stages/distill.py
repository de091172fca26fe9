from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.training import Extras, run_distill, save_run
from stages.common import ParamsOption, StateOption, one_line_errors, setup

app = typer.Typer()


@app.command("distill")
@one_line_errors
def distill(
    objective: Annotated[
        str, typer.Option(help="Objective, a key of params.distill: vanilla | sokd.")
    ],
    data: Annotated[Path, typer.Option(help="Prepared dataset (.pt) from `prepare`.")],
    teacher: Annotated[Path, typer.Option(help="Teacher checkpoint from `train_teacher`.")],
    out: Annotated[
        Path, typer.Option(help="Directory for student.pt (and improved_teacher.pt for sokd).")
    ],
    metrics: Annotated[Path, typer.Option(help="Metrics JSON to write.")],
    plots: Annotated[Path, typer.Option(help="Directory for history.csv and history.png.")],
    state: StateOption = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Train the student with one objective against the frozen teacher."""
    p, runtime = setup(params)
    run = run_distill(objective, data, teacher, p.distill, runtime, p.seed, Extras(state=state))
    save_run(run, {role: out / f"{role}.pt" for role in run.networks}, metrics, plots, p.seed)
