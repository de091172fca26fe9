from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.checkpoint import load_checkpoint
from pipeline.data import load_prepared
from pipeline.errors import GateError
from pipeline.files import write_json
from pipeline.verification import verify as verify_onnx
from stages.common import ParamsOption, log, one_line_errors, setup

app = typer.Typer()


@app.command("verify")
@one_line_errors
def verify(
    onnx: Annotated[Path, typer.Option(help="ONNX file from `export`.")],
    checkpoint: Annotated[Path, typer.Option(help="The checkpoint it was exported from.")],
    data: Annotated[
        Path, typer.Option(help="Prepared dataset (.pt); only its test split is read.")
    ],
    metrics: Annotated[Path, typer.Option(help="Metrics JSON to write (written on failure too).")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Gate: onnxruntime vs torch on the whole test set; exit 2 if a threshold fails."""
    p, _ = setup(params)
    report = verify_onnx(
        onnx, load_checkpoint(checkpoint), load_prepared(data, ("test",)), p.verify
    )
    write_json(metrics, report)
    if not report["passed"]:
        raise GateError(f"verify failed: {report['failures']}")
    log.info(
        "verify passed: ONNX top-1 %.2f%% (torch %.2f%%), agreement %.4f, max |Δlogit| %.1e",
        100 * report["onnx_top1"],
        100 * report["torch_top1"],
        report["agreement"],
        report["max_abs_logit_diff"],
    )
