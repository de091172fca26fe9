"""Per-epoch experiment records for DVC, written with dvclive while a stage trains.

Each training stage logs every epoch's row to its own dvclive folder: `metrics.json` (the latest
values, which `dvc exp show` reads while the run goes on) and one TSV per plotted metric under
`plots/metrics/` (validation top-1 and loss, the training loss and each of its terms, the learning
rate), with the epoch as the step. Timings and memory go to `metrics.json` only: a chart of them
against the epoch says nothing. dvclive is a dependency of the package; from a plain checkout
without it (the GPU check), training runs and this record is skipped with one warning.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.core.distributed import world

log = logging.getLogger(__name__)
PLOTTED = ("val/top1", "val/loss", "train/", "lr")


def plotted(key: str) -> bool:
    """Whether a history column is drawn per epoch (it is always in metrics.json)."""
    return key.startswith(PLOTTED)


class EpochLog:
    """Call with each finished epoch's history row; `close()` at the end of the run."""

    def __init__(self, folder: Path | None) -> None:
        self.live: Any = None
        if folder is None or not world().is_main:  # under torchrun the main process logs
            return
        try:
            from dvclive import Live
        except ImportError:
            log.warning("dvclive is not installed: no per-epoch record in %s", folder)
            return
        # DVC runs the experiment and owns dvc.yaml: dvclive neither commits nor writes one.
        self.live = Live(dir=str(folder), save_dvc_exp=False, dvcyaml=False)

    def __call__(self, row: dict[str, float]) -> None:
        if self.live is None:
            return
        self.live.step = int(row["epoch"])
        for key, value in row.items():
            if key != "epoch":
                self.live.log_metric(key, value, plot=plotted(key))
        self.live.next_step()

    def close(self) -> None:
        if self.live is not None:
            self.live.step -= 1  # next_step() moved past the last epoch: summarise that one
            self.live.end()
