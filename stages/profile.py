from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from stages.common import MetricsOption, ParamsOption, RecordOption, log, one_line_errors, setup

app = typer.Typer()


@app.command("profile")
@one_line_errors
def profile(
    data: Annotated[
        Path, typer.Option(help="Prepared dataset: its classes and input size; calibration.")
    ],
    metrics: MetricsOption,
    record: RecordOption = None,
    within: Annotated[
        Path | None,
        typer.Option(help="JSON list of the candidates within budget: the ones distill trains."),
    ] = None,
    export: Annotated[
        Path | None,
        typer.Option(
            help="Also write the candidates' files, a manifest and time_candidates.py here, to "
            "time them on the deployment machine (numpy and onnxruntime only)."
        ),
    ] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Time each candidate student as its shipped files, untrained; stop if none fits budget."""
    from pipeline.core.files import scratch_dir, write_json, write_metrics
    from pipeline.data.datasets import load_prepared
    from pipeline.models import check_model_name
    from pipeline.shipping.profile import check_some_within, profile_candidates

    p, _ = setup(params, "profile", outputs=(record, metrics, within))
    archs = p.distill.candidates or (p.distill.arch,)
    for i, arch in enumerate(archs):
        check_model_name(
            arch, f"distill.candidates[{i}]" if p.distill.candidates else "distill.arch"
        )
    prepared = load_prepared(data, ("train",))
    start = time.perf_counter()
    with scratch_dir(metrics.parent, "profile") as work:
        report = profile_candidates(
            archs, prepared, p.budget, p.quantize, p.seed, work, export, p.export
        )
    report["profile/time_s"] = time.perf_counter() - start  # the search's cost before training
    write_metrics(record, metrics, report, ("*/int8_p90_ms", "*/bytes", "*/within_budget"))
    for arch in archs:
        log.info(
            "%s: INT8 p90 %.3f ms (fp32 %.3f), %d bytes, %.1f M MACs: %s",
            arch,
            report[f"{arch}/int8_p90_ms"],
            report[f"{arch}/fp32_p90_ms"],
            report[f"{arch}/bytes"],
            report[f"{arch}/macs"] / 1e6,
            report[f"{arch}/over_budget"] or "within budget",
        )
    if export is not None:
        log.info("wrote %s: time them there with `python %s/time_candidates.py %s`", export,
                 export, export)  # fmt: skip
    check_some_within(archs, report)
    if within is not None:  # only what decides training: timings alone never rerun distill
        chosen = [arch for arch in archs if report[f"{arch}/within_budget"]]
        write_json(within, {"within_budget": chosen})
