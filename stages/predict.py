from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages.common import one_line_errors

app = typer.Typer()
SHIPPED = (Path("models/int8/student.int8.onnx"), Path("models/student.onnx"))


@app.command("predict")
@one_line_errors
def predict(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders of them.")],
    model: Annotated[
        Path | None,
        typer.Option(help="ONNX file (or checkpoint); default: the shipped INT8 file, else fp32."),
    ] = None,
    top_k: Annotated[int, typer.Option(min=1, help="Classes to give per image.")] = 1,
    out: Annotated[
        Path | None, typer.Option(help="Write the predictions as .csv or .json instead.")
    ] = None,
    threads: Annotated[int, typer.Option(min=1, help="onnxruntime intra-op threads.")] = 1,
) -> None:
    """Not a stage: each image's label and probability from a shipped file (no torch needed)."""
    from pipeline.core.errors import ConfigError
    from pipeline.shipping.deploy import check_output, load_student, write_predictions

    if out is not None:
        check_output(out)
    if model is None:
        model = next((p for p in SHIPPED if p.is_file()), None)
        if model is None:
            raise ConfigError("no shipped file here; give --model FILE.onnx (or run `dvc repro`)")
    rows = load_student(model, threads).predict_files(paths, top_k)
    if out is not None:
        write_predictions(rows, out)
        typer.echo(f"wrote {len(rows)} predictions to {out}", err=True)
        return
    for row in rows:
        ranked = "  ".join(f"{label} {p:.4f}" for label, p in row.top)
        typer.echo(f"{row.path}\t{ranked}")
