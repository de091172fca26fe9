"""No stale outputs: every project file a stage can run lies under one of its listed deps.

Checked for every params a user can set: params.yaml, each preset, a torchvision and a timm
overlay, and each objective as a `distill` item. The walk is static (every `import` of a module,
function-level ones included, followed through the project's packages), plus the registry members
imported by name (objectives, timm networks); a module that holds nothing but a docstring (a
package marker) cannot change a result and needs no dep. An edit to an objective never reruns
`prepare` or the teacher.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from pipeline.core.config import Params, read_yaml
from pipeline.core.params import load_params, parse_params
from pipeline.objectives import NAMES
from tests.conftest import ROOT

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PACKAGES = ("pipeline", "stages")
OVERLAYS = {
    "torchvision": {
        "prepare": {"dataset": "imagefolder", "image_size": 48},
        "train_teacher": {"arch": "tv_resnet34"},
        "distill": {"arch": "tv_mobilenet_v2", "objectives": ["vanilla", "kd", "sokd"]},
    },
    "timm": {
        "prepare": {"dataset": "imagefolder", "storage": "files"},
        "train_teacher": {"arch": "timm:resnet18d"},
        "distill": {"arch": "timm:resnet10t", "objectives": ["vanilla", "dkd", "sokd_at"]},
    },
}
CASES = {
    "params.yaml": load_params(ROOT / "params.yaml"),
    **{p.name: parse_params(read_yaml(p)) for p in sorted((ROOT / "presets").glob("*.yaml"))},
    **{name: parse_params(overlay) for name, overlay in OVERLAYS.items()},
}


def module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Every project module `path` imports, except under `if TYPE_CHECKING:`."""
    modules, todo = set(), [ast.parse(path.read_text())]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
        todo.extend(ast.iter_child_nodes(node))
    return {m for m in modules if m.split(".")[0] in PACKAGES}


def reachable(starts: list[Path]) -> set[Path]:
    """Every project file that importing `starts` can execute (parent packages included)."""
    seen, todo = set(), list(starts)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in imported_modules(path):
            parts = module.split(".")
            for i in range(1, len(parts) + 1):
                found = module_file(".".join(parts[:i]))
                if found is not None:
                    todo.append(found)
    return seen


def by_name(stage: str, p: Params, objective: str | None) -> list[Path]:
    """Registry members a stage imports by name: its objective, and timm's adapter."""
    names = {"train_teacher": ["vanilla"], "distill": [objective]}.get(stage, [])
    files = [ROOT / "pipeline" / "objectives" / f"{name}.py" for name in names]
    if stage in ("train_teacher", "distill", "evaluate", "export", "verify") and any(
        arch.startswith("timm:") for arch in (p.train_teacher.arch, p.distill.arch)
    ):
        files.append(ROOT / "pipeline" / "models" / "timm_zoo.py")
    return files


def listed(stage: str, p: Params, objective: str | None) -> list[str]:
    deps = [str(d) for d in STAGES[stage]["deps"]]
    values = {"${item.objective}": objective or "", "${prepare.dataset}": p.prepare.dataset}
    for key, value in values.items():
        deps = [d.replace(key, value) for d in deps]
    return deps


def is_marker(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    return len(body) == 1 and isinstance(body[0], ast.Expr)


def uncovered(stage: str, p: Params, objective: str | None = None) -> list[str]:
    starts = [ROOT / "stages" / f"{stage}.py", *by_name(stage, p, objective)]
    deps = [Path(d) for d in listed(stage, p, objective)]
    return sorted(
        str(rel)
        for rel in (f.relative_to(ROOT) for f in reachable(starts) if not is_marker(f))
        if not any(rel == dep or dep in rel.parents for dep in deps)
    )


ITEMS = [(stage, None) for stage in STAGES if stage != "distill"]
ITEMS += [("distill", name) for name in NAMES]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize(("stage", "objective"), ITEMS)
def test_every_file_a_stage_can_run_lies_under_its_deps(
    case: str, stage: str, objective: str | None
) -> None:
    missing = uncovered(stage, CASES[case], objective)
    assert not missing, f"{stage} ({case}) runs these files but does not depend on them"


def test_the_walk_sees_function_level_and_by_name_imports() -> None:
    p = CASES["timm"]
    files = {str(f.relative_to(ROOT)) for f in reachable([ROOT / "stages" / "distill.py"])}
    assert {"stages/common.py", "pipeline/core/params.py", "pipeline/training/runs.py"} <= files
    assert "pipeline/objectives/kd.py" not in files  # imported by name: by_name adds it
    with_members = by_name("distill", p, "kd")
    assert ROOT / "pipeline/models/timm_zoo.py" in with_members


@pytest.mark.parametrize("stage", ["fetch", "prepare", "profile", "train_teacher"])
def test_an_objective_edit_never_reruns_prepare_or_the_teacher(stage: str) -> None:
    shared = {"__init__", "base", "losses", "vanilla"}  # the teacher trains with `vanilla`
    for name in [n for n in NAMES if n not in shared]:
        path = Path("pipeline/objectives") / f"{name}.py"
        deps = [Path(d) for d in listed(stage, CASES["params.yaml"], None)]
        assert not any(path == d or d in path.parents for d in deps), (stage, name)


def test_dvc_yaml_is_short_and_lists_folders_not_files() -> None:
    assert len((ROOT / "dvc.yaml").read_text().splitlines()) <= 150
    for stage, spec in STAGES.items():
        code = [d for d in map(str, spec["deps"]) if d.startswith("pipeline/")]
        files = [d for d in code if d.endswith(".py") and not d.startswith("pipeline/objectives/")]
        assert not files, f"{stage}: list the role's folder, not its files: {files}"


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_dep_exists_or_is_made_by_a_stage(stage: str) -> None:
    outs = {
        str(next(iter(o)) if isinstance(o, dict) else o)
        for s in STAGES.values()
        for o in s.get("outs", [])
    }
    for dep in map(str, STAGES[stage]["deps"]):
        if "${" in dep:
            continue  # templated: matrix items and the dataset's folder (the fetch stage's out)
        assert (ROOT / dep).exists() or dep in outs or any(dep in o for o in outs), dep
