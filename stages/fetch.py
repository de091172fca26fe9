from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages.common import ParamsOption, log, one_line_errors, setup

app = typer.Typer()


@app.command("fetch")
@one_line_errors
def fetch(
    out: Annotated[
        Path, typer.Option(help="Folder the raw dataset goes to (data/raw/<prepare.dataset>).")
    ],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Obtain the raw dataset of prepare.dataset (kept if there); mirror yours for imagefolder."""
    from pipeline.data.fetch import fetch as fetch_dataset

    p, _ = setup(params, "fetch")
    log.info(fetch_dataset(p.prepare.dataset, out, Path(p.prepare.folder)))
