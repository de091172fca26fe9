"""What every stage command shares: one-line errors and params loading."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ParamSpec, TypeVar

import typer

from pipeline.core.errors import PipelineError

if TYPE_CHECKING:  # torch is imported by the command that runs, never by `--help`
    from pipeline.core.config import Params
    from pipeline.core.runtime import Runtime

P = ParamSpec("P")
R = TypeVar("R")

ParamsOption = Annotated[
    Path, typer.Option(help="Hyperparameters file (every number comes from here).")
]
log = logging.getLogger("stages")
StateOption = Annotated[
    Path | None,
    typer.Option(help="Training state, rewritten after every epoch; a rerun resumes from it."),
]
RecordOption = Annotated[
    Path | None,
    typer.Option(help="JSON of everything measured (records/); without it --metrics holds all."),
]
MetricsOption = Annotated[
    Path, typer.Option(help="The stage's headline metrics JSON, the file DVC declares.")
]
LiveOption = Annotated[
    Path, typer.Option(help="dvclive folder: per-epoch metrics.json and plots, history.png.")
]


def one_line_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Report a PipelineError as `error: <message>` on stderr and exit with its status.

    2 for bad input or usage, 1 for a missed gate (see pipeline/core/errors.py), 130 for Ctrl-C.
    """

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except PipelineError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(err.exit_code) from None
        except BrokenPipeError:  # `sokd predict ... | head`: the reader has all it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except OSError as err:  # the environment, not the code: a path, a permission, a disk
            where = f"{err.filename}: " if err.filename else ""
            typer.echo(
                f"error: {where}{err.strerror or err}; check the path, its permissions "
                "and free disk space",
                err=True,
            )
            raise typer.Exit(2) from None
        except KeyboardInterrupt:  # Ctrl-C: every output is written whole or not at all
            typer.echo("error: interrupted; no output was half-written", err=True)
            raise typer.Exit(130) from None

    return wrapper


def setup(
    params_path: Path,
    stage: str,
    objectives: tuple[str, ...] = (),
    outputs: tuple[Path | None, ...] = (),
) -> tuple[Params, Runtime]:
    """Load params strictly (checking the names `stage` uses and the sections of `objectives`),
    refuse file `outputs` where a directory stands (before any work, so no output of the stage
    is replaced while another cannot be), seed every generator, resolve the compute runtime."""
    from pipeline.core.distributed import init_from_env
    from pipeline.core.files import writable_file

    for path in outputs:
        if path is not None:
            writable_file(path)
    from pipeline.core.params import load_params
    from pipeline.core.runtime import resolve_runtime, seed_everything

    params = load_params(params_path, stage, objectives)
    if not init_from_env().is_main:  # under torchrun, the main process alone speaks
        for name in ("pipeline", "stages"):
            logging.getLogger(name).setLevel(logging.WARNING)
    seed_everything(params.seed)
    return params, resolve_runtime(params.runtime)
