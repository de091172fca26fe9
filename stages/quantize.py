from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.shipping.targets import INT8_FILE, REFUSAL_FILE
from stages.common import MetricsOption, ParamsOption, RecordOption, log, one_line_errors, setup

app = typer.Typer()


@app.command("quantize")
@one_line_errors
def quantize(
    onnx: Annotated[Path, typer.Option(help="fp32 ONNX file from `export`.")],
    data: Annotated[
        Path,
        typer.Option(help="Prepared dataset: training images calibrate, validation ones check."),
    ],
    out: Annotated[
        Path,
        typer.Option(
            help=f"Folder to write: {INT8_FILE}, or {REFUSAL_FILE} saying why INT8 was "
            "declined (verify.int8.required: false)."
        ),
    ],
    metrics: MetricsOption,
    record: RecordOption = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Static INT8 calibrated on training images; layers stay fp32 until val meets the gate."""
    from pipeline.core.files import atomic_dir, write_json, write_metrics
    from pipeline.data.datasets import load_prepared
    from pipeline.shipping.int8 import Int8GateError, quantize_int8

    p, _ = setup(params, "quantize", outputs=(record, metrics))
    data_splits = load_prepared(data, ("train", "val"))
    with atomic_dir(out) as folder:
        try:
            report = quantize_int8(onnx, folder / INT8_FILE, data_splits, p.quantize,
                                   p.verify.int8, p.seed)  # fmt: skip
            report["int8/accepted"] = True
        except Int8GateError as refused:
            if p.verify.int8.required:
                raise
            report = refused.figures | {"int8/accepted": False, "int8/refusal": str(refused)}
            write_json(folder / REFUSAL_FILE, {"target": "int8"} | report)
    write_metrics(record, metrics, report, ("int8/accepted", "int8/val_agreement"))
    if not report["int8/accepted"]:
        log.warning(
            "warning: INT8 declined, the run ships the checkpoint and the fp32 ONNX file (set "
            "verify.int8.required: true to fail instead): %s",
            report["int8/refusal"],
        )
        return
    log.info(
        "wrote %s (%d bytes, %.1fx smaller; val top-1 drop %.4f, agreement %.4f; %d layer(s) "
        "fp32: %s)",
        out / INT8_FILE,
        report["int8/file_bytes"],
        report["int8/size_ratio"],
        report["int8/val_top1_drop"],
        report["int8/val_agreement"],
        report["int8/fp32_layer_count"],
        report["int8/fp32_layers"] or "none",
    )
