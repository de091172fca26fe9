from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages.common import (
    LiveOption,
    MetricsOption,
    ParamsOption,
    RecordOption,
    StateOption,
    one_line_errors,
    setup,
)

app = typer.Typer()


@app.command("train_teacher")
@one_line_errors
def train_teacher(
    data: Annotated[Path, typer.Option(help="Prepared dataset (.pt) from `prepare`.")],
    out: Annotated[Path, typer.Option(help="Teacher checkpoint to write (.pt).")],
    metrics: MetricsOption,
    live: LiveOption,
    state: StateOption = None,
    record: RecordOption = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Pretrain the teacher with cross-entropy, or start it from train_teacher.weights."""
    from pipeline.training.live import EpochLog
    from pipeline.training.runs import Extras, run_teacher, save_run

    p, runtime = setup(params, "train_teacher", outputs=(out, record, metrics, state))
    epoch_log = EpochLog(live)
    run = run_teacher(data, p.train_teacher, runtime, Extras(on_row=epoch_log, state=state))
    save_run(run, {"teacher": out}, metrics, live, record)
    epoch_log.close()
