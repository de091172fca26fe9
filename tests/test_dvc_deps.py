"""No stale outputs, no needless reruns: each stage's code deps are exactly what it runs.

`pipeline.stage_deps` walks each stage's imports statically (function-level ones included) and adds
the registry members the params make it use; `dvc.yaml` must list exactly those files: a missing
one leaves stale outputs after an edit, an extra one reruns a stage an edit cannot change.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pipeline.params import load_params
from pipeline.stage_deps import OBJECTIVE_ITEM, code_deps, project_files
from tests.conftest import ROOT

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PARAMS = load_params(ROOT / "params.yaml")


def listed_code(stage: str) -> set[str]:
    return {str(d) for d in STAGES[stage]["deps"] if str(d).startswith(("pipeline", "stages"))}


def _covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT)
    return any(rel == Path(dep) or Path(dep) in rel.parents for dep in deps)


@pytest.mark.parametrize("stage", list(STAGES))
def test_each_stage_lists_exactly_the_code_it_runs(stage: str) -> None:
    wanted, listed = code_deps(stage, PARAMS), listed_code(stage)
    assert not wanted - listed, f"{stage!r} runs these files but does not depend on them"
    assert not listed - wanted, f"{stage!r} depends on these files but never runs them"


def test_no_quickstart_stage_depends_on_a_model_or_objective_it_does_not_use() -> None:
    indexes = {"pipeline/models/__init__.py", "pipeline/objectives/__init__.py"}
    for stage in STAGES:
        code = listed_code(stage)
        assert not {"pipeline/models/vgg.py", "pipeline/objectives/dkd.py"} & code, stage
        objectives = {d for d in code if d.startswith("pipeline/objectives/")}
        assert objectives <= {*indexes, "pipeline/objectives/base.py", OBJECTIVE_ITEM}, stage
    # The registries' indexes only: prepare depends on no model and no objective.
    assert {d for d in listed_code("prepare") if "/models/" in d or "/objectives/" in d} == indexes


def test_the_walk_sees_function_level_imports_and_skips_annotation_only_ones() -> None:
    files = {str(f.relative_to(ROOT)) for f in project_files(ROOT / "stages" / "distill.py")}
    # stages/common.py imports pipeline.config at module level, the stage its pipeline modules in
    # its function; objectives are imported by name, so no objective module is in the walk.
    assert {"stages/common.py", "pipeline/config.py", "pipeline/training.py"} <= files
    assert "pipeline/objectives/sokd.py" not in files and "pipeline/targets/int8.py" not in files
    index = project_files(ROOT / "pipeline" / "models" / "__init__.py")
    assert ROOT / "pipeline" / "models" / "staged.py" not in index  # under TYPE_CHECKING only


def test_a_changed_list_of_objectives_changes_the_deps() -> None:
    import dataclasses

    with_fitnet = dataclasses.replace(PARAMS.distill, objectives=("vanilla", "sokd_fitnet"))
    deps = code_deps("distill", dataclasses.replace(PARAMS, distill=with_fitnet))
    # sokd_fitnet's own module is the templated item; the SOKD core it builds on is common.
    assert (
        "pipeline/objectives/sokd.py" in deps and "pipeline/objectives/sokd_fitnet.py" not in deps
    )


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


BENCHMARKS = {
    name: yaml.safe_load((ROOT / "benchmarks" / name / "dvc.yaml").read_text())["stages"]
    for name in ("comparison", "user_path")
}
PIPELINE = {str(p.relative_to(ROOT)) for p in (ROOT / "pipeline").rglob("*.py")}


@pytest.mark.parametrize(
    ("bench", "stage"), [(b, s) for b, stages in BENCHMARKS.items() for s in stages]
)
def test_every_benchmark_stage_depends_on_what_it_runs(bench: str, stage: str) -> None:
    # A benchmark's DVC project lives two folders down: its deps are "../../<file>". Its runs
    # take models and objectives by name, so it lists every pipeline module (file by file: a
    # folder dep would count the __pycache__ files Python writes there).
    spec = BENCHMARKS[bench][stage]
    module = re.search(r"python -m ([\w.]+)", spec["cmd"]).group(1)
    deps = {d.removeprefix("../../") for d in map(str, spec["deps"])}
    files = project_files(ROOT / (module.replace(".", "/") + ".py"))
    code = {str(f.relative_to(ROOT)) for f in files if f.is_relative_to(ROOT / "benchmarks")}
    assert code <= deps, f"benchmarks/{bench} stage {stage!r} misses {sorted(code - deps)}"
    assert {d for d in deps if d.startswith("pipeline")} == PIPELINE, stage
    assert "benchmarks/__init__.py" in deps  # `python -m benchmarks.x` runs it first
