"""The complete params file and presets: tools for `make`, never imported by a stage.

    python -m pipeline.core.template show [FILE]        the effective params (defaults + FILE)
    python -m pipeline.core.template template [FILE]    a complete params file keeping FILE's values

`show` checks every registry name of the file (datasets, architectures, objectives), so `make
repro` stops on a typo before the first stage runs. A preset runs as the `dvc exp run` line
`exp_run_line` writes (docs/presets.md, rendered by `make docs`): DVC applies it, no `make` needed.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.config import Params, as_dict, read_yaml
from pipeline.core.errors import ConfigError
from pipeline.core.files import write_text
from pipeline.core.params import defaults, load_params, parse_params


def check_names(p: Params) -> Params:
    """Fail in one line, naming the params key, unless every registry name of `p` exists."""
    from pipeline.data.datasets import DATASETS
    from pipeline.models import check_model_name

    if p.prepare.dataset not in DATASETS:
        raise ConfigError(
            f"params.prepare.dataset: unknown dataset {p.prepare.dataset!r}; "
            f"choose one of {', '.join(DATASETS.names())}"
        )
    for section in ("train_teacher", "distill"):
        check_model_name(getattr(p, section).arch, f"params.{section}.arch")
    return p


# --- presets as DVC parameter overrides -------------------------------------------------------


def _leaves(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf; an empty mapping is a leaf (a section DVC needs)."""
    if isinstance(tree, dict) and tree:
        for key, value in tree.items():
            yield from _leaves(value, f"{prefix}{key}.")
    else:
        yield prefix.removesuffix("."), tree


BARE = re.compile(r"[A-Za-z_][\w-]*$")
HYDRA_WORDS = {"true", "false", "null", "nan", "inf"}  # what Hydra would read as no string


def _hydra_value(value: Any) -> str:
    """A value in Hydra's override grammar, which `dvc exp run -S` speaks."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str) and BARE.match(value) and value.lower() not in HYDRA_WORDS:
        return value  # a plain name needs no quotes (and reads well in a shell line)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_hydra_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"cannot write {value!r} as a DVC parameter override")


def complete(params: Params) -> dict[str, Any]:
    """Every key of `params` as plain data, objective sections under `distill` by name."""
    tree = as_dict(params)
    tree["distill"].update(tree["distill"].pop("settings"))
    return tree


def preset_overrides(preset: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """`-S` overrides that turn `current` (params.yaml, parsed) into the defaults + `preset`.

    Only keys whose value changes are set, so `dvc params diff` shows exactly what the preset
    changes; a key `current` lacks is added (`++key=value`).
    """
    target, now = preset or {}, dict(_leaves(current or {}))
    wanted = _leaves(complete(check_names(parse_params(target))))  # fails before DVC runs
    return [
        f"{'' if key in now else '++'}{key}={_hydra_value(value)}"
        for key, value in wanted
        if key not in now or now[key] != value
    ]


def exp_run_line(name: str, overrides: list[str], width: int = 96) -> str:
    """The shell command that runs a preset as a named DVC experiment, wrapped at `width`."""
    lines, line = [], f"dvc exp run -n {name}"
    for arg in (f"-S {shlex.quote(o)}" for o in overrides):
        if len(line) + len(arg) + 3 > width:
            lines.append(line + " \\")
            line = "  "
        line += ("" if line == "  " else " ") + arg
    return "\n".join([*lines, line])


# --- the complete params file: every key, its comment, the quickstart's choices ---------------


def field_comments(cls: type) -> dict[str, str]:
    """Each dataclass field's comment in `cls`'s source: the one on its line, else the block of
    comment lines just above it (joined), else ""."""
    lines = [
        line
        for base in cls.__mro__  # a subclass's own fields first, then the inherited ones
        if dataclasses.is_dataclass(base)
        for line in inspect.getsource(base).splitlines()
    ]
    comments: dict[str, str] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    for i, line in enumerate(lines):
        match = re.match(r"\s+(\w+):[^#=]+(?:=[^#]*)?(?:#\s*(.*))?$", line)
        if not match or match.group(1) not in names or match.group(1) in comments:
            continue
        above = []
        for previous in reversed(lines[:i]):
            if not previous.strip().startswith("#"):
                break
            above.insert(0, previous.strip().lstrip("#").strip())
        first_sentence = " ".join(above).split(". ")[0].rstrip(".")
        comments[match.group(1)] = match.group(2) or first_sentence
    return comments


def _section_classes(p: Params) -> dict[str, type]:
    """Dotted section -> the dataclass that documents it (objective sections included)."""
    from pipeline.objectives import OBJECTIVES

    classes: dict[str, type] = {"": Params}

    def walk(prefix: str, value: Any) -> None:
        for f in dataclasses.fields(value):
            child = getattr(value, f.name)
            if dataclasses.is_dataclass(child):
                classes[f"{prefix}{f.name}"] = type(child)
                walk(f"{prefix}{f.name}.", child)

    walk("", p)
    for name in OBJECTIVES.names():
        classes[f"distill.{name}"] = OBJECTIVES.get(name).config
    return classes


def _objective_notes() -> dict[str, str]:
    """distill.<objective> -> the first line of the objective's docstring (its paper)."""
    from pipeline.objectives import OBJECTIVES

    return {
        f"distill.{name}": (OBJECTIVES.get(name).__doc__ or name).strip().splitlines()[0]
        for name in OBJECTIVES.names()
    }


def _yaml_scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


TEMPLATE_HEADER = """\
# Every knob of the pipeline, one line each, with the default from the code
# (pipeline/core/config.py, and each objective's config class in pipeline/objectives/); where
# this file departs from a default, its comment names the default. `dvc exp run -S
# section.key=value` changes any of them, `dvc params diff` shows what changed. Sections are
# named after the dvc.yaml stages that read them. Regenerated from the code (keeping these
# values) by `make params`.
"""

SECTION_NOTES = {
    "runtime": "how to compute (never what): device, precision, memory layout",
    "prepare": "the data split (stage prepare)",
    "train_teacher": "the teacher and its pretraining (stage train_teacher)",
    "budget": "what the shipped file may cost, 0: unchecked (stage profile weighs candidates)",
    "distill": "the students: one per objective, same architecture and schedule",
    "evaluate": "test-set numbers of every network (stage evaluate)",
    "export": "which student ships, as ONNX (stage export)",
    "quantize": "the INT8 file (stage quantize)",
    "verify": "the gate (stage verify): exit 1 when a threshold is missed",
}


def template(overlay: Any = None) -> str:
    """A complete params file: every key with its documented default (or `overlay`'s value, the
    default then named in the comment) and one comment line per key and section."""
    chosen = parse_params(overlay or {})
    base, values = complete(defaults()), complete(chosen)
    classes, notes = _section_classes(chosen), SECTION_NOTES | _objective_notes()
    out: list[str] = []

    def emit(section: str, tree: dict[str, Any], default: dict[str, Any], depth: int) -> None:
        comments = field_comments(classes[section]) if section in classes else {}
        for key, value in tree.items():
            dotted, pad = f"{section}.{key}".lstrip("."), "  " * depth
            note = notes.get(dotted) or comments.get(key, "")
            if isinstance(value, dict) and value:
                out.append(f"{pad}{key}:" + (f"  # {note}" if note else ""))
                emit(dotted, value, default.get(key, {}), depth + 1)
                continue
            if key in default and value != default[key]:
                note = f"{note.rstrip('.')}; default {_yaml_scalar(default[key])}".lstrip("; ")
            out.append(f"{pad}{key}: {_yaml_scalar(value)}" + (f"  # {note}" if note else ""))

    emit("", values, base, 0)
    return TEMPLATE_HEADER + "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", help="print the effective params (defaults + FILE) as YAML")
    show.add_argument("file", type=Path, nargs="?", help="a params file (none: the defaults)")
    full = sub.add_parser("template", help="print a complete params file (every key, commented)")
    full.add_argument("overlay", type=Path, nargs="?", help="values to keep (e.g. params.yaml)")
    full.add_argument("--out", type=Path, help="write here (atomically) instead of stdout")
    args = parser.parse_args(argv)
    try:
        if args.command == "template":
            text = template(read_yaml(args.overlay) if args.overlay else None)
            if args.out:
                write_text(args.out, text)
            else:
                print(text, end="")
        else:
            params = check_names(load_params(args.file) if args.file else defaults())
            print(yaml.safe_dump(json.loads(json.dumps(as_dict(params))), sort_keys=False))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
