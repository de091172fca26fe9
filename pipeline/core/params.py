"""Loading a params file: the defaults, the overlay, the objective sections.

A params file is an overlay onto the documented defaults (`pipeline/core/config.py` and each
objective's config class). `load_params` reads it strictly, merges it onto the defaults and
validates every value after the merge, so a wrongly typed or unknown key anywhere fails the first
stage that loads the file. Objective sections are resolved through the objective registry (only
those a stage runs). Names of other registries are checked where they are used, with their params
key: the dataset by `prepare`, the architectures by the training stages (this module imports no
model and no dataset, so no stage's code deps grow by them). `pipeline.core.template` checks a
whole file at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.core.config import (
    SHIP_BEST,
    DistillConfig,
    Params,
    from_mapping,
    read_yaml,
)
from pipeline.core.errors import ConfigError


def _resolve_objectives(distill: DistillConfig, wanted: Sequence[str] | None) -> DistillConfig:
    """Check the objective names, and resolve the config objects of `wanted` (None: every
    registered objective): each section merged onto its objective's defaults."""
    from pipeline.objectives import OBJECTIVES

    names = OBJECTIVES.names()  # read from the source: no objective module is imported
    for key in distill.settings:
        if key not in OBJECTIVES:
            raise ConfigError(
                f"params.distill.{key}: unknown key; valid keys are arch, weights, train, "
                f"objectives and the objectives {', '.join(names)}"
            )
    for i, name in enumerate(distill.objectives):
        if name not in OBJECTIVES:
            raise ConfigError(
                f"params.distill.objectives[{i}]: unknown objective {name!r}; "
                f"choose one of {', '.join(names)}"
            )
    if len(set(distill.objectives)) != len(distill.objectives) or not distill.objectives:
        raise ConfigError("params.distill.objectives: list each objective once, at least one")
    settings = {
        name: from_mapping(
            OBJECTIVES.get(name).config, distill.settings.get(name), f"params.distill.{name}"
        )
        for name in (names if wanted is None else wanted)
    }
    return dataclasses.replace(distill, settings=settings)


def _check_export(p: Params) -> None:
    if p.export.objective not in (SHIP_BEST, *p.distill.objectives):
        raise ConfigError(
            f"params.export.objective: {p.export.objective!r} is not trained; add it to "
            f"distill.objectives ({', '.join(p.distill.objectives)}) or ship the best: best"
        )


def parse_params(
    raw: Any, stage: str | None = None, objectives: Sequence[str] | None = None
) -> Params:
    """Plain data (a params file's content) -> validated `Params` on the defaults.

    Every section's keys, types and ranges are checked, and the objective names. Objective
    sections are resolved where they are used: for `stage` (a dvc.yaml stage) only those in
    `objectives`; without a stage, every objective's.
    """
    params = from_mapping(Params, raw, "params")
    wanted = objectives if stage is not None else None
    params = dataclasses.replace(params, distill=_resolve_objectives(params.distill, wanted))
    _check_export(params)
    return params


def load_params(
    path: Path | str, stage: str | None = None, objectives: Sequence[str] = ()
) -> Params:
    """Read a params file strictly onto the defaults; raise ConfigError naming the dotted key.

    `stage`: resolve only the objective sections in `objectives` (see `parse_params`).
    """
    return parse_params(read_yaml(Path(path)), stage, objectives)


def defaults() -> Params:
    """The documented defaults: what an empty params file means."""
    return parse_params({})
