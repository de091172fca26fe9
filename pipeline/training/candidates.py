"""One objective's students, one per candidate architecture within budget, trained in turn.

The students share the objective, the schedule, the seed and the teacher: only the architecture
differs, so their validation top-1 compares like for like when `export` chooses among them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from pipeline.core.config import DistillConfig
from pipeline.core.distributed import world
from pipeline.core.files import write_json
from pipeline.core.runtime import Runtime
from pipeline.core.students import arch_folder
from pipeline.training.live import EpochLog
from pipeline.training.reporting import plot_history
from pipeline.training.runs import Extras, run_distill, save_checkpoints


def train_candidates(
    objective: str,
    archs: tuple[str, ...],
    data: Path,
    teacher: Path,
    cfg: DistillConfig,
    runtime: Runtime,
    out: Path,
    live: Path,
    state: Path | None,
) -> dict[str, Any]:
    """Train `objective`'s student for each of `archs`: checkpoints in `out/<arch folder>/`, the
    per-epoch record in `live/<arch folder>/`. Returns every run's metrics as
    `<arch folder>/<key>`; `live/metrics.json` gets each run's last epoch the same way."""
    report: dict[str, Any] = {}
    last_rows: dict[str, Any] = {}
    for arch in archs:
        folder = arch_folder(arch)
        epoch_log = EpochLog(live / folder)
        resume = None if state is None else state.with_name(f"{state.stem}-{folder}{state.suffix}")
        extras = Extras(on_row=epoch_log, state=resume)
        run = run_distill(objective, data, teacher, replace(cfg, arch=arch), runtime, extras)
        save_checkpoints(run, {role: out / folder / f"{role}.pt" for role in run.networks})
        epoch_log.close()
        report |= {f"{folder}/{key}": value for key, value in run.metrics.items()}
        last_rows |= {f"{folder}/{k}": v for k, v in (run.fit.history or [{}])[-1].items()}
        if world().is_main:
            plot_history(live / folder / "history.png", run.fit.history, f"{run.name}, {arch}")
    if world().is_main:
        write_json(live / "metrics.json", last_rows)
    return report
