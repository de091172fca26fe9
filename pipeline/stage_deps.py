"""The project files each dvc.yaml stage runs: what its `deps` must list, no more, no less.

    python -m pipeline.stage_deps [params.yaml]     print each stage's code deps

The walk is static (every `import` in a module, function-level ones included, followed through the
project's packages), so it sees lazy imports a running process would only execute on some paths.
Registry members (models, objectives, targets) are imported by name at run time, so the walk adds
the ones the params make a stage use: its architectures' modules, each objective's module (a
`distill` matrix item depends on `pipeline/objectives/${item.objective}.py` itself; what those
modules import besides themselves is common to the stage) and the targets `verify` opens.
`stages/cli.py` only dispatches and configures logging: it is nobody's dep.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from pipeline.config import Params

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "stages", "benchmarks")
OBJECTIVE_ITEM = "pipeline/objectives/${item.objective}.py"


def module_file(module: str) -> Path | None:
    """The source file of a project module (a package's `__init__.py`), or None."""
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of `tree` except the bodies of `if TYPE_CHECKING:` (annotations only)."""
    nodes, todo = [], [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return nodes


def _imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            # `from pipeline.models import wrn` imports the submodule pipeline.models.wrn
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {m for m in modules if m.split(".")[0] in PACKAGES}


def project_files(*starts: Path) -> set[Path]:
    """Every project source file that importing `starts` can execute (parents' `__init__` too)."""
    seen: set[Path] = set()
    todo = list(starts)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _imported_modules(path):
            parts = module.split(".")
            for i in range(len(parts)):  # `a.b.c` runs a/__init__.py and a/b/__init__.py first
                found = module_file(".".join(parts[: i + 1]))
                if found is not None and found not in seen:
                    todo.append(found)
    return seen


def _files(*modules: str) -> list[Path]:
    return [f for f in (module_file(m) for m in modules) if f is not None]


def _members(stage: str, p: Params) -> list[Path]:
    """The registry members `stage` imports by name under params `p` (objectives aside)."""
    from pipeline.models import module_of
    from pipeline.targets import TARGETS

    teacher, student = p.train_teacher.arch, p.distill.arch
    archs = {
        "train_teacher": [teacher],
        "distill": [teacher, student],
        "evaluate": [teacher, student],
        "export": [student],
        "verify": [student],
    }.get(stage, [])
    targets = {"verify": ["onnx", "int8"], "export": ["onnx"], "quantize": ["int8"]}
    modules = [module_of(a) for a in archs] + [TARGETS.module(t) for t in targets.get(stage, [])]
    return _files(*modules)


def code_deps(stage: str, p: Params) -> set[str]:
    """The code deps `stage` must list (paths from the repository root)."""
    from pipeline.objectives import OBJECTIVES

    files = project_files(ROOT / "stages" / f"{stage}.py", *_members(stage, p))
    deps = {str(f.relative_to(ROOT)) for f in files}
    if stage == "distill":  # each item's own objective module is templated
        own = _files(*(OBJECTIVES.module(o) for o in p.distill.objectives))
        for path in own:
            deps |= {str(f.relative_to(ROOT)) for f in project_files(path) - {path}}
        deps.add(OBJECTIVE_ITEM)
    return deps


def main(argv: list[str] | None = None) -> int:
    import yaml

    from pipeline.params import load_params

    args = argv if argv is not None else sys.argv[1:]
    params = load_params(Path(args[0]) if args else ROOT / "params.yaml")
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage in stages:
        print(f"{stage}:")
        for dep in sorted(code_deps(stage, params)):
            print(f"  - {dep}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
