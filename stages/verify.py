from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from stages.common import MetricsOption, ParamsOption, RecordOption, log, one_line_errors, setup

app = typer.Typer()
# For dvc exp show.
HEADLINE = ("gate/passed", "*/top1", "*/agreement", "int8/accepted", "budget/passed")


@app.command("verify")
@one_line_errors
def verify(
    artifact: Annotated[
        list[Path],
        typer.Option(
            help="A shipped file (fp32 ONNX, INT8, ...) or quantize's folder; repeat for "
            "each. Its target is read from the file."
        ),
    ],
    checkpoint: Annotated[Path, typer.Option(help="The student checkpoint they were made from.")],
    data: Annotated[
        Path, typer.Option(help="Prepared dataset (.pt); only its test split is read.")
    ],
    evaluation: Annotated[Path, typer.Option(help="records/evaluate.json, for the model card.")],
    selection: Annotated[
        Path, typer.Option(help="records/export.json: which student ships and why, for the card.")
    ],
    metrics: MetricsOption,
    card: Annotated[Path, typer.Option(help="Model card (Markdown) to write.")],
    record: RecordOption = None,
    front: Annotated[
        Path | None,
        typer.Option(help="PNG beside the card: every student's val top-1 against its latency."),
    ] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Gate: every shipped file under onnxruntime vs torch on the test set; exit 1 on a miss."""
    from pipeline.core.errors import GateError
    from pipeline.core.files import write_metrics, write_text
    from pipeline.core.runtime import machine_metrics
    from pipeline.data.datasets import load_prepared
    from pipeline.models.checkpoint import load_checkpoint
    from pipeline.shipping.front import plot_front
    from pipeline.shipping.latency import measure
    from pipeline.shipping.model_card import card_keys, library_versions, read_metrics, render
    from pipeline.shipping.verification import shipped_files, summary
    from pipeline.shipping.verification import verify as verify_files

    p, _ = setup(params, "verify", outputs=(record, metrics, card))
    ckpt, test = load_checkpoint(checkpoint), load_prepared(data, ("test",))
    # Everything the card quotes is read before any output is written.
    chosen = read_metrics(selection, "export")
    name = chosen.get("selection/objective") or ckpt.params.get("objective", "?")
    runs = read_metrics(evaluation, "evaluate", card_keys(str(name)))
    listed, declined = shipped_files(artifact)
    report, engines = verify_files(ckpt, listed, test, p.verify)
    files = {name: engine.path for name, engine in engines.items()}
    shape, cfg = (ckpt.in_channels, *ckpt.image_size), p.verify
    report |= measure(ckpt.build(), files, shape, cfg.threads, cfg.latency_runs)
    report |= {f"versions/{k}": v for k, v in library_versions().items()} | machine_metrics()
    # A target the run may decline records whether it shipped, so `dvc exp show` compares runs.
    report |= {f"{n}/accepted": True for n in files if hasattr(p.verify.gate(n), "required")}
    for name, reason in declined.items():
        report |= {f"{name}/accepted": False, f"{name}/refusal": reason}
        if getattr(p.verify.gate(name), "required", True):  # an earlier run did not require it
            report["gate/passed"] = False
            report["gate/failures"] += f"; {name} is required (verify.{name}.required): {reason}"
    if p.budget.limited:  # the shipped file against the budget, as profile measured candidates
        from pipeline.shipping.profile import hold_budget

        report |= hold_budget(ckpt.build(), ckpt.arch, files, shape, p.budget)
        if not report["budget/passed"]:
            report["gate/passed"] = False
            report["gate/failures"] += f"; over budget: {report['budget/failures']}"
    # Both written on failure too: the record says what missed.
    write_metrics(record, metrics, report, HEADLINE)
    if not report["gate/passed"]:
        raise GateError(f"verify failed: {report['gate/failures'].strip('; ')}")
    shipped = {"checkpoint": checkpoint, **files}
    drawn = front is not None and plot_front(front, chosen, p.budget.latency_ms)
    picture = os.path.relpath(front, card.parent) if drawn else ""
    write_text(
        card, render(ckpt, report, runs, chosen, shipped, data, test.dataset, declined, picture)
    )
    for name, reason in declined.items():
        log.warning("warning: %s declined, not shipped: %s", name, reason)
    log.info("verify passed: %s; wrote %s", summary(report, list(files)), card)
