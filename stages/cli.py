"""The `sokd` command: each subcommand is exactly one dvc.yaml stage of the same name."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from stages import distill, evaluate, export, prepare, quantize, train_teacher, verify

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="SOKD compression pipeline. Each command is exactly one dvc.yaml stage.",
)


@app.callback()
def main_options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """SOKD compression pipeline. Each command is exactly one dvc.yaml stage."""
    # Our own loggers speak at INFO; libraries (the ONNX exporter narrates every pass) only warn.
    logging.basicConfig(level=logging.WARNING, format="%(message)s", force=True)
    for name in ("pipeline", "stages"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)


for stage in (prepare, train_teacher, distill, evaluate, export, quantize, verify):
    app.add_typer(stage.app)  # unnamed: the stage's command appears at the top level


def main() -> None:
    """Console-script entry point."""
    app()
