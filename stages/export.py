from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages.common import ParamsOption, log, one_line_errors, setup

app = typer.Typer()


@app.command("export")
@one_line_errors
def export(
    checkpoint: Annotated[Path, typer.Option(help="Student checkpoint to export.")],
    out: Annotated[Path, typer.Option(help="ONNX file to write.")],
    metrics: Annotated[Path, typer.Option(help="Metrics JSON to write.")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Export the student alone to ONNX (named input/output, dynamic batch) and run onnx.checker."""
    from pipeline.checkpoint import load_checkpoint
    from pipeline.export import export_onnx
    from pipeline.files import write_json

    p, _ = setup(params)
    report = export_onnx(load_checkpoint(checkpoint), out, p.export)
    write_json(metrics, report)
    log.info(
        "wrote %s (%d bytes, %s exporter, opset %d)",
        out,
        report["onnx/file_bytes"],
        p.export.exporter,
        p.export.opset,
    )
