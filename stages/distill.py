from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.core.errors import ConfigError
from pipeline.objectives import NAMES
from stages.common import (
    LiveOption,
    MetricsOption,
    ParamsOption,
    RecordOption,
    StateOption,
    one_line_errors,
    setup,
)

# The choices, without importing torch: `--help` lists them, and a wrong name is one `error:`
# line (exit 2) before anything heavy is imported.
OBJECTIVE_NAMES = sorted(NAMES)
CHOICES = "[" + "|".join(OBJECTIVE_NAMES) + "]"

app = typer.Typer()


@app.command("distill")
@one_line_errors
def distill(
    objective: Annotated[
        str,
        typer.Option(
            metavar=CHOICES, help="Objective to train (its settings: params.distill.<objective>)."
        ),
    ],
    data: Annotated[Path, typer.Option(help="Prepared dataset (.pt) from `prepare`.")],
    teacher: Annotated[Path, typer.Option(help="Teacher checkpoint from `train_teacher`.")],
    out: Annotated[
        Path, typer.Option(help="Directory for student.pt (and improved_teacher.pt for sokd).")
    ],
    metrics: MetricsOption,
    live: LiveOption,
    state: StateOption = None,
    record: RecordOption = None,
    within: Annotated[
        Path | None,
        typer.Option(
            help="profile's candidates within budget: with distill.candidates, each is trained "
            "in turn into <out>/<arch>."
        ),
    ] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Train the student with one objective against the frozen teacher (one per candidate)."""
    if objective not in OBJECTIVE_NAMES:
        raise ConfigError(
            f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVE_NAMES)}"
        )
    from pipeline.training.live import EpochLog
    from pipeline.training.runs import HEADLINE, Extras, run_distill, save_run

    p, runtime = setup(params, "distill", (objective,), (record, metrics, state))
    if p.distill.candidates:
        from pipeline.core.files import write_metrics
        from pipeline.core.students import within_budget
        from pipeline.training.candidates import train_candidates

        if within is None:
            raise ConfigError("distill.candidates is set: give --within, profile's list")
        archs = within_budget(within, p.distill.candidates)
        report = train_candidates(
            objective, archs, data, teacher, p.distill, runtime, out, live, state
        )
        write_metrics(record, metrics, report, tuple(f"*/{key}" for key in HEADLINE))
        return
    epoch_log = EpochLog(live)
    run = run_distill(
        objective, data, teacher, p.distill, runtime, Extras(on_row=epoch_log, state=state)
    )
    paths = {role: out / f"{role}.pt" for role in run.networks}
    save_run(run, paths, metrics, live, record)
    epoch_log.close()
