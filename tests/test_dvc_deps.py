"""No stale outputs: every project file a stage's command imports is one of that stage's deps.

The walk is static (every `import` in a module, function-level ones included, followed through the
project's packages), so it sees the lazy imports a subprocess's `sys.modules` would miss until the
code path runs. It starts at `stages/<stage>.py`: `stages/cli.py` only dispatches to the stage and
configures logging, so it is not a dep (a change there cannot change a stage's outputs).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

PACKAGES = ("pipeline", "stages", "benchmarks")


def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _with_parents(module: str) -> list[str]:
    """`a.b.c` imports run `a/__init__.py` and `a/b/__init__.py` first."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            # `from pipeline.models import wrn` imports the submodule pipeline.models.wrn
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {m for m in modules if m.split(".")[0] in PACKAGES}


def project_files(start: Path) -> set[Path]:
    """Every project source file that importing `start` can execute."""
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _imported_modules(path):
            for name in _with_parents(module):
                found = _module_file(name)
                if found is not None and found not in seen:
                    todo.append(found)
    return seen


def _covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT)
    return any(rel == Path(dep) or Path(dep) in rel.parents for dep in deps)


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def missing_deps(stage: str) -> list[str]:
    deps = [str(d) for d in STAGES[stage]["deps"]]
    files = project_files(ROOT / "stages" / f"{stage}.py")
    return sorted(str(f.relative_to(ROOT)) for f in files if not _covered(f, deps))


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_imported_project_file_is_a_dep_of_the_stage(stage: str) -> None:
    missing = missing_deps(stage)
    assert not missing, f"dvc.yaml stage {stage!r} runs these files but does not depend on them"


def test_the_walk_sees_function_level_and_package_imports() -> None:
    files = {str(f.relative_to(ROOT)) for f in project_files(ROOT / "stages" / "distill.py")}
    # stages/common.py imports pipeline.config; the objectives package imports its modules.
    assert {"stages/common.py", "pipeline/config.py", "pipeline/__init__.py"} <= files
    assert "pipeline/objectives/sokd.py" in files and "pipeline/quantize.py" not in files


def test_a_removed_dep_is_caught(tmp_path: Path) -> None:
    stage = STAGES["evaluate"]
    deps = [d for d in stage["deps"] if d != "pipeline/batches.py"]
    files = project_files(ROOT / "stages" / "evaluate.py")
    assert any(not _covered(f, deps) for f in files)


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_dep_exists_or_is_made_by_a_stage(stage: str) -> None:
    outs = {
        str(next(iter(o)) if isinstance(o, dict) else o)
        for s in STAGES.values()
        for o in s.get("outs", [])
    }
    for dep in STAGES[stage]["deps"]:
        if "${" in dep or dep.startswith("data/raw"):
            continue  # templated (matrix items, params) or fetched by `make data`
        assert (ROOT / dep).exists() or dep in outs or any(dep in o for o in outs), dep


COMPARISON = yaml.safe_load((ROOT / "benchmarks" / "comparison" / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", list(COMPARISON))
def test_every_comparison_stage_depends_on_what_it_runs(stage: str) -> None:
    # The benchmark's DVC project lives two folders down: its deps are "../../<file>".
    spec = COMPARISON[stage]
    module = re.search(r"python -m ([\w.]+)", spec["cmd"]).group(1)
    deps = [d.removeprefix("../../") for d in spec["deps"]]
    files = project_files(ROOT / (module.replace(".", "/") + ".py"))
    missing = sorted(str(f.relative_to(ROOT)) for f in files if not _covered(f, deps))
    assert not missing, f"benchmarks/comparison stage {stage!r} misses {missing}"
    assert "benchmarks/__init__.py" in deps  # `python -m benchmarks.x` runs it first
