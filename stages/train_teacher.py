from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.training import Extras, run_teacher, save_run
from stages.common import ParamsOption, StateOption, one_line_errors, setup

app = typer.Typer()


@app.command("train_teacher")
@one_line_errors
def train_teacher(
    data: Annotated[Path, typer.Option(help="Prepared dataset (.pt) from `prepare`.")],
    out: Annotated[Path, typer.Option(help="Teacher checkpoint to write (.pt).")],
    metrics: Annotated[Path, typer.Option(help="Metrics JSON to write.")],
    plots: Annotated[Path, typer.Option(help="Directory for history.csv and history.png.")],
    state: StateOption = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Pretrain the teacher with cross-entropy on the training split."""
    p, runtime = setup(params)
    run = run_teacher(data, p.train_teacher, runtime, p.seed, Extras(state=state))
    save_run(run, {"teacher": out}, metrics, plots, p.seed)
