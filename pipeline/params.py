"""Loading a params file where the registries are known: the defaults, the overlay, the names.

    python -m pipeline.params show [FILE]        the effective params (defaults + FILE) as YAML
    python -m pipeline.params overrides PRESET   DVC `-S` overrides that make params.yaml PRESET

A params file is an overlay onto the documented defaults (`pipeline/config.py` and each
objective's config class). `load_params` reads it strictly, merges it onto the defaults, validates
every value after the merge, resolves every objective section through the objective registry and
checks every registry name, so a typo anywhere fails the first stage that loads the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import DistillConfig, Params, as_dict, from_mapping, read_yaml
from pipeline.errors import ConfigError


def _resolve_objectives(distill: DistillConfig) -> DistillConfig:
    """Every registered objective's config object: its section merged onto its defaults."""
    from pipeline.objectives import OBJECTIVES

    names = OBJECTIVES.names()
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
        for name in names
    }
    return dataclasses.replace(distill, settings=settings)


def _check_names(p: Params) -> None:
    from pipeline.data import DATASETS
    from pipeline.models import check_model_name
    from pipeline.objectives import OBJECTIVES

    check_model_name(p.train_teacher.arch, "params.train_teacher.arch")
    check_model_name(p.distill.arch, "params.distill.arch")
    checks = [
        ("params.prepare.dataset", DATASETS, p.prepare.dataset),
        ("params.export.objective", OBJECTIVES, p.export.objective),
    ]
    for where, registry, name in checks:
        if name not in registry:
            raise ConfigError(
                f"{where}: unknown {registry.kind} {name!r}; "
                f"choose one of {', '.join(registry.names())}"
            )
    if p.export.objective not in p.distill.objectives:
        raise ConfigError(
            f"params.export.objective: {p.export.objective!r} is not trained; add it to "
            f"distill.objectives ({', '.join(p.distill.objectives)})"
        )


def parse_params(raw: Any) -> Params:
    """Plain data (a params file's content) -> validated `Params` on the defaults."""
    params = from_mapping(Params, raw, "params")
    params = dataclasses.replace(params, distill=_resolve_objectives(params.distill))
    _check_names(params)
    return params


def load_params(path: Path | str) -> Params:
    """Read a params file strictly onto the defaults; raise ConfigError naming the dotted key."""
    return parse_params(read_yaml(Path(path)))


def defaults() -> Params:
    """The documented defaults: what an empty params file means."""
    return parse_params({})


# --- presets as DVC parameter overrides -------------------------------------------------------


def _leaves(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf; an empty mapping is a leaf (a section DVC needs)."""
    if isinstance(tree, dict) and tree:
        for key, value in tree.items():
            yield from _leaves(value, f"{prefix}{key}.")
    else:
        yield prefix.removesuffix("."), tree


def _lookup(tree: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        tree = tree[key]
    return tree


def _hydra_value(value: Any) -> str:
    """A value in Hydra's override grammar, which `dvc exp run -S` speaks."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_hydra_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"cannot write {value!r} as a DVC parameter override")


def preset_overrides(preset: Path, current: Path) -> list[str]:
    """`-S` overrides that turn `current` (params.yaml) into an overlay equal to `preset`.

    Every key the preset sets is set; every key `current` sets that the preset does not goes back
    to its default; every objective the preset trains gets a (possibly empty) section, which DVC
    needs for `distill.<objective>`. `dvc params diff` then shows exactly what the preset changes.
    """
    target, now = read_yaml(preset) or {}, read_yaml(current) or {}
    parse_params(target)  # a bad preset fails here, before DVC runs anything
    base = as_dict(defaults())
    base["distill"].update(base["distill"].pop("settings"))
    wanted = dict(_leaves(target))
    for key, value in _leaves(now):
        covered = any(key.startswith(f"{w}.") or w.startswith(f"{key}.") for w in wanted)
        if key not in wanted and not covered:
            wanted[key] = value if value == {} else _lookup(base, key)
    objectives = wanted.get("distill.objectives", base["distill"]["objectives"])
    for name in objectives:
        if not any(k == f"distill.{name}" or k.startswith(f"distill.{name}.") for k in wanted):
            wanted[f"distill.{name}"] = {}
    return [f"++{key}={_hydra_value(value)}" for key, value in wanted.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", help="print the effective params (defaults + FILE) as YAML")
    show.add_argument("file", type=Path, nargs="?", help="a params file (none: the defaults)")
    over = sub.add_parser("overrides", help="print `-S` arguments for `dvc exp run`")
    over.add_argument("preset", type=Path)
    over.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    try:
        if args.command == "show":
            params = load_params(args.file) if args.file else defaults()
            print(yaml.safe_dump(json.loads(json.dumps(as_dict(params))), sort_keys=False))
        else:
            overrides = preset_overrides(args.preset, args.params)
            print(" ".join(f"-S {shlex.quote(o)}" for o in overrides))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
