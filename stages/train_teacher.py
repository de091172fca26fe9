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
    weights: Annotated[
        Path | None,
        typer.Option(
            help="Start from these teacher weights (a state_dict file; tv_* archs also "
            "take torchvision's). Its SHA-256 and accuracy are recorded."
        ),
    ] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Pretrain the teacher with cross-entropy, or import it from --weights (and fine-tune)."""
    p, runtime = setup(params)
    run = run_teacher(data, p.train_teacher, runtime, p.seed, Extras(state=state), weights)
    save_run(run, {"teacher": out}, metrics, plots, p.seed)
