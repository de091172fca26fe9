"""The `sokd` command: each subcommand is exactly one dvc.yaml stage of the same name, but for
`predict`, which runs a shipped file on images (torch-free, for deployments)."""

from __future__ import annotations

import importlib.metadata
import logging
import sys
import traceback
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

try:  # typer >= 0.2x carries its own copy of click
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # older typer runs on click itself
    from click.exceptions import NoArgsIsHelpError, UsageError

from stages import (
    distill,
    evaluate,
    export,
    fetch,
    predict,
    prepare,
    profile,
    quantize,
    train_teacher,
    verify,
)

EPILOG = (
    "Exit status: 0 done; 1 a gate was missed (verify, profile, quantize); 2 bad input or usage, "
    "with one `error:` line saying what is wrong and how to fix it; 3 an internal error (a bug: "
    "rerun with -v for the traceback and report it); 130 interrupted."
)
INTERNAL_ERROR = 3  # neither the user's input nor a gate: the code itself failed
_verbose = False  # set by `-v`: an internal error then prints its traceback


class OneLineUsageErrors(TyperGroup):
    """Usage errors (an unknown or missing option) as one `error:` line, exit status 2, like
    every other bad input, instead of click's multi-line box."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            status = super().main(*args, standalone_mode=False, **kwargs)
        except NoArgsIsHelpError as err:  # plain `sokd`: the help, as asked
            typer.echo(err.ctx.get_help() if err.ctx else err.format_message())
            status = 0
        except UsageError as err:
            where = err.ctx.command_path if err.ctx else "sokd"
            typer.echo(f"error: {err.format_message().rstrip('.')}; see `{where} --help`", err=True)
            status = 2
        except typer.Abort:
            typer.echo("error: interrupted", err=True)
            status = 130
        except ModuleNotFoundError as err:
            status = _missing(err)
        except Exception as err:  # not bad input (one_line_errors), not a gate: a bug
            status = _internal_error(err)
        if not standalone_mode:
            return status
        sys.exit(status if isinstance(status, int) else 0)


# What the `train` extra brings: a stage run in the runtime-only install (`pip install
# sokd-pipeline`, made for `sokd predict`) lacks them.
TRAINING_STACK = {
    "torch",
    "torchvision",
    "onnx",
    "onnxscript",
    "dvc",
    "dvclive",
    "yaml",
    "tqdm",
    "matplotlib",
}


def _missing(err: ModuleNotFoundError) -> int:
    """A stage run without the training stack is bad set-up, not a bug: say what to install."""
    if (err.name or "").split(".")[0] not in TRAINING_STACK:
        return _internal_error(err)
    typer.echo(
        f"error: this command needs {err.name}, part of the training stack; "
        "pip install 'sokd-pipeline[train]' (`sokd predict` alone runs without it)",
        err=True,
    )
    return 2


def _internal_error(err: Exception) -> int:
    """One line saying it is a bug and how to report it; the traceback with `-v`."""
    if _verbose:
        traceback.print_exception(err)
    what = " ".join(str(err).split())[:200]
    how = "report it" if _verbose else "rerun with -v for the traceback and report it"
    typer.echo(
        f"error: internal error, a bug in sokd ({type(err).__name__}: {what}); {how} to the "
        "project's issue tracker with the command and params.yaml",
        err=True,
    )
    return INTERNAL_ERROR


app = typer.Typer(
    cls=OneLineUsageErrors,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="SOKD compression. Each command is one dvc.yaml stage; predict runs a shipped file.",
    epilog=EPILOG,
)


def _version() -> str:
    try:
        return importlib.metadata.version("sokd-pipeline")
    except importlib.metadata.PackageNotFoundError:  # run from a plain checkout
        return "(not installed: pip install -e .)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"sokd {_version()}")
        raise typer.Exit()


@app.callback()
def main_options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """SOKD compression. Each command is one dvc.yaml stage; predict runs a shipped file."""
    global _verbose
    _verbose = verbose
    # Our own loggers speak at INFO; libraries (the ONNX exporter narrates every pass) only warn.
    logging.basicConfig(level=logging.WARNING, format="%(message)s", force=True)
    for name in ("pipeline", "stages"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)


STAGES = (fetch, prepare, profile, train_teacher, distill, evaluate, export, quantize, verify)
for stage in (*STAGES, predict):
    app.add_typer(stage.app)  # unnamed: the stage's command appears at the top level


def main() -> None:
    """Console-script entry point."""
    app()
