from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages.common import ParamsOption, log, one_line_errors, setup

app = typer.Typer()


@app.command("verify")
@one_line_errors
def verify(
    onnx: Annotated[Path, typer.Option(help="fp32 ONNX file from `export`.")],
    int8: Annotated[Path, typer.Option(help="INT8 ONNX file from `quantize`.")],
    checkpoint: Annotated[Path, typer.Option(help="The checkpoint both were made from.")],
    data: Annotated[
        Path, typer.Option(help="Prepared dataset (.pt); only its test split is read.")
    ],
    evaluation: Annotated[Path, typer.Option(help="metrics/evaluate.json, for the model card.")],
    selection: Annotated[
        Path, typer.Option(help="metrics/export.json: which student ships and why, for the card.")
    ],
    metrics: Annotated[Path, typer.Option(help="Metrics JSON to write (written on failure too).")],
    card: Annotated[Path, typer.Option(help="Model card (Markdown) to write.")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Gate: onnxruntime fp32 and INT8 vs torch on the test set; exit 1 if a threshold fails."""
    from pipeline.checkpoint import load_checkpoint
    from pipeline.data import load_prepared
    from pipeline.errors import GateError
    from pipeline.files import write_json, write_text
    from pipeline.latency import measure
    from pipeline.model_card import library_versions, read_metrics, render
    from pipeline.verification import verify as verify_onnx

    p, _ = setup(params)
    ckpt, evaluated = load_checkpoint(checkpoint), read_metrics(evaluation, "evaluate")
    chosen = read_metrics(selection, "export")
    test = load_prepared(data, ("test",))
    report, _ = verify_onnx(onnx, int8, ckpt, test, p.verify)
    shape = (ckpt.in_channels, *ckpt.image_size)
    timed = {"onnx": onnx, "int8": int8}
    report.update(measure(ckpt.build(), timed, shape, p.verify.threads, p.verify.latency_runs))
    report.update({f"versions/{k}": v for k, v in library_versions().items()})
    write_json(metrics, report)
    if not report["gate/passed"]:
        raise GateError(f"verify failed: {report['gate/failures']}")
    files = {"checkpoint": checkpoint, "onnx": onnx, "int8": int8}
    write_text(card, render(ckpt, report, evaluated, chosen, files, data, test.dataset))
    log.info(
        "verify passed: top-1 torch %.2f%%, ONNX %.2f%%, INT8 %.2f%%; agreement %.4f, "
        "max |Δlogit| %.1e; wrote %s",
        100 * report["torch/top1"],
        100 * report["onnx/top1"],
        100 * report["int8/top1"],
        report["onnx/agreement"],
        report["onnx/max_abs_logit_diff"],
        card,
    )
