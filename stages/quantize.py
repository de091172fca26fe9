from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages.common import ParamsOption, log, one_line_errors, setup

app = typer.Typer()


@app.command("quantize")
@one_line_errors
def quantize(
    onnx: Annotated[Path, typer.Option(help="fp32 ONNX file from `export`.")],
    data: Annotated[
        Path,
        typer.Option(help="Prepared dataset: training images calibrate, validation ones check."),
    ],
    out: Annotated[Path, typer.Option(help="INT8 ONNX file to write.")],
    metrics: Annotated[Path, typer.Option(help="Metrics JSON to write.")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Static INT8 calibrated on training images; layers stay fp32 until val meets the gate."""
    from pipeline.core.files import write_json
    from pipeline.data.datasets import load_prepared
    from pipeline.shipping.int8 import quantize_int8

    p, _ = setup(params, "quantize", outputs=(out, metrics))
    data_splits = load_prepared(data, ("train", "val"))
    report = quantize_int8(onnx, out, data_splits, p.quantize, p.verify.int8, p.seed)
    write_json(metrics, report)
    log.info(
        "wrote %s (%d bytes, %.1fx smaller; val top-1 drop %.4f, agreement %.4f; %d layer(s) "
        "fp32: %s)",
        out,
        report["int8/file_bytes"],
        report["int8/size_ratio"],
        report["int8/val_top1_drop"],
        report["int8/val_agreement"],
        report["int8/fp32_layer_count"],
        report["int8/fp32_layers"] or "none",
    )
