"""DVC users' habits hold: `dvc exp run -S key=value` works on any documented key (no `++`), and
every `dvc exp run` and `make` command the README and docs show runs (dry: nothing is trained)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

BIN = Path(sys.executable).parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    env |= {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project as a user clones it (params.yaml as committed), raw data as placeholders."""
    repo = tmp_path_factory.mktemp("dvcparams")
    for name in (
        "dvc.yaml",
        ".dvcignore",
        ".gitignore",
        "params.yaml",
        "Makefile",
        "pyproject.toml",
    ):
        shutil.copy(ROOT / name, repo / name)
    for folder in ("pipeline", "stages", ".dvc", "presets"):
        ignore = shutil.ignore_patterns("__pycache__", "cache", "tmp", "config.local")
        shutil.copytree(ROOT / folder, repo / folder, ignore=ignore)
    for dataset in ("fashion_mnist", "cifar100", "imagefolder"):
        (repo / "data" / "raw" / dataset).mkdir(parents=True)
        (repo / "data" / "raw" / dataset / "placeholder").write_text("a dry run reads no data")
    for args in (["git", "init", "-q"], ["git", "add", "-A", "-f"], ["git", "commit", "-qm", "x"]):
        assert _run(args, repo).returncode == 0
    return repo


def _exp_dry(repo: Path, overrides: list[str]) -> subprocess.CompletedProcess[str]:
    # `prepare` as the target: the overrides are applied to the whole params.yaml, and a dry run
    # of the first stage needs no outputs of earlier runs.
    args = ["dvc", "exp", "run", "--dry", "prepare"]
    return _run([*args, *[a for o in overrides for a in ("-S", o)]], repo)


def _one_key_per_section() -> list[str]:
    """A changed value for the first leaf of every section of params.yaml."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    overrides = []
    for section, tree in raw.items():
        key, value = section, tree
        while isinstance(value, dict) and value:
            name, value = next(iter(value.items()))
            key = f"{key}.{name}"
        changed = {bool: lambda v: not v, int: lambda v: v + 1, float: lambda v: v / 2}
        new = changed.get(type(value), lambda v: v)(value)
        overrides.append(f"{key}={str(new).lower() if isinstance(new, bool) else new}")
    return overrides


def test_every_section_takes_a_plain_override(repo: Path) -> None:
    overrides = _one_key_per_section()
    assert len(overrides) == len(yaml.safe_load((ROOT / "params.yaml").read_text()))
    done = _exp_dry(repo, overrides)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_key_that_does_not_exist_is_refused(repo: Path) -> None:
    done = _exp_dry(repo, ["prepare.no_such_key=1"])
    assert done.returncode != 0 and "not in struct" in done.stdout + done.stderr


def documented_commands() -> list[tuple[str, str]]:
    """(file, command) for every `dvc exp run` and `make` line in a bash block of the docs."""
    found = []
    for path in DOCS:
        blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", path.read_text(), re.S)
        for block in blocks:
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split("#")[0].strip()
                if line.startswith(("dvc exp run", "make ")):
                    found.append((path.name, line))
    return found


@pytest.mark.parametrize(("doc", "command"), documented_commands())
def test_every_documented_command_runs_dry(repo: Path, doc: str, command: str) -> None:
    args = shlex.split(command)
    if args[0] == "make":
        done = _run(["make", "-n", *args[1:]], repo)
    else:
        named = args.index("-n") if "-n" in args else None  # `-n NAME`: a named experiment
        rest = [
            a for i, a in enumerate(args[3:], 3) if named is None or i not in (named, named + 1)
        ]
        done = _exp_dry(repo, [a for a in rest if a != "-S"])
    assert done.returncode == 0, f"{doc}: {command}\n{done.stdout}{done.stderr}"
