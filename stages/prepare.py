from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages.common import MetricsOption, ParamsOption, RecordOption, log, one_line_errors, setup

app = typer.Typer()


@app.command("prepare")
@one_line_errors
def prepare(
    raw: Annotated[Path, typer.Option(help="Raw dataset directory (data/raw/<dataset>).")],
    out: Annotated[Path, typer.Option(help="Prepared artifact to write (.pt).")],
    metrics: MetricsOption,
    record: RecordOption = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Read the raw dataset, carve a seeded validation split, write one artifact."""
    from pipeline.core.files import sha256_file, write_metrics
    from pipeline.data.datasets import describe, save_prepared
    from pipeline.data.datasets import prepare as prepare_data

    p, _ = setup(params, "prepare", outputs=(out, record, metrics))
    prepared = prepare_data(raw, p.prepare, p.seed)
    save_prepared(out, prepared)
    counts = {
        f"images/{split}": len(prepared[split]["labels"]) for split in ("train", "val", "test")
    }
    summary = {"data/classes": len(prepared["classes"]), "data/sha256": sha256_file(out)}
    write_metrics(record, metrics, {**counts, **summary}, ("images/*",))
    log.info("wrote %s: %s", out, describe(prepared))
