"""The docs say what the committed results say: every rendered block equals a fresh render, a
changed figure in the JSON is caught, and every link and path the docs name exists."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from benchmarks import docs
from tests.conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP = (
    "pipeline",
    "stages",
    "tests",
    "benchmarks",
    "presets",
    "docs",
    "models",
    "metrics",
    "records",
)
TOP += ("data", "dvclive", "plots", ".github", ".ci")


def test_every_rendered_block_is_what_the_committed_json_renders() -> None:
    # Both as committed: a `dvc repro` on another CPU rewrites records/, not what the docs quote.
    stale = [
        str(path.relative_to(ROOT))
        for path, (text, committed) in docs.rendered_files(committed=True).items()
        if text != committed
    ]
    assert not stale, f"run `make docs` and commit: {stale} differ from a fresh render"


def test_a_rebuild_that_rewrites_the_metrics_leaves_the_docs_check_passing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a user's `make repro` then `make test` does: records/ rewritten, nothing committed.
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    for path in docs.rendered_files():  # the working tree's pages (committed or staged)
        (clone / path.relative_to(ROOT)).write_text(docs.text_of(path))
    subprocess.run(["git", "add", "-A"], cwd=clone, check=True)
    verify = clone / "records" / "verify.json"
    figures = json.loads(verify.read_text())
    figures["onnx/file_bytes"] += 292  # another CPU, another exporter build: another size
    figures["int8/top1"] += 0.0001  # and one test image more
    verify.write_text(json.dumps(figures))
    monkeypatch.setattr(docs, "ROOT", clone)
    monkeypatch.setattr(docs, "DOCS", [clone / p.relative_to(ROOT) for p in docs.DOCS])
    assert docs.main(["--check"]) == 0
    changed = {p.name for p, (text, now) in docs.rendered_files().items() if text != now}
    assert {"README.md", "dvc.yaml"} <= changed  # `make docs` renders the rebuild's figures


def test_every_page_has_its_blocks_and_no_block_is_empty() -> None:
    names = {m.group(2) for page in PAGES for m in docs.BLOCK.finditer(page.read_text())}
    assert names == set(docs.RENDERERS)  # every renderer is used, no block is unknown
    for page in PAGES:
        for match in docs.BLOCK.finditer(page.read_text()):
            assert match.group(3).strip(), f"{page.name}: block {match.group(2)} is empty"


def test_a_changed_number_in_the_json_fails_until_rendered_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for folder in ("records", "benchmarks", "docs", "presets"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("work"))
    for name in ("README.md", "dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    verify = tmp_path / "records" / "verify.json"
    figures = json.loads(verify.read_text())
    figures["int8/top1"] += 0.0001  # one test image more
    verify.write_text(json.dumps(figures))
    monkeypatch.setattr(docs, "ROOT", tmp_path)
    monkeypatch.setattr(docs, "DOCS", [tmp_path / "README.md", *sorted(tmp_path.glob("docs/*.md"))])
    changed = {p.name for p, (text, now) in docs.rendered_files().items() if text != now}
    assert {"README.md", "int8.md", "dvc.yaml"} <= changed
    assert docs.main(["--check"]) == 1  # the check fails ...
    for path, (text, _) in docs.rendered_files().items():
        path.write_text(text)
    assert docs.main(["--check"]) == 0  # ... until the render is rerun


def _dvc_outputs() -> list[str]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    outs = []
    for stage in stages.values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []) or []:
                path = str(next(iter(entry)) if isinstance(entry, dict) else entry)
                outs.append(path.split("${")[0].rstrip("/"))
    return outs


def _exists(path: str, outputs: list[str]) -> bool:
    pattern = re.sub(r"<[^>]+>|\b[A-Z]+\b", "*", path.split("#")[0].rstrip("/"))
    if any(ROOT.glob(pattern)) or (ROOT / pattern).exists():
        return True
    # What `dvc repro` or the user writes: the pipeline's outputs, raw data, a preset of yours.
    made = [*outputs, "data/raw", "models/distill", "models/state"]
    return any(pattern == o or pattern.startswith(f"{o}/") or o.startswith(pattern) for o in made)


def named_paths(page: Path) -> list[str]:
    """Relative links, and backticked paths under the project's folders or its top files."""
    text = page.read_text()
    links = [
        str((page.parent / link).resolve().relative_to(ROOT))
        for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
        if not link.startswith(("http", "mailto"))
    ]
    ticked = [
        token
        for token in re.findall(r"`([^`\s]+)`", text)
        if token.split("/")[0] in TOP and "/" in token and "${" not in token and "=" not in token
    ]
    files = ("params.yaml", "dvc.yaml", "Makefile", "pyproject.toml", "dvc.lock")
    return links + ticked + [f for f in files if f"`{f}`" in text]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_and_path_named_exists(page: Path) -> None:
    outputs = _dvc_outputs()
    missing = [path for path in named_paths(page) if not _exists(path, outputs)]
    assert not missing, f"{page.name} names paths that do not exist: {missing}"


def test_the_readme_is_short_and_has_what_a_user_needs() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for heading in ("## Two commands", "## Your own images", "## The gate in CI", "## The CLI"):
        assert heading in text
    assert "make repro" in text and "make test" in text


def test_the_ci_example_runs_the_ci_preset_line_of_docs_presets() -> None:
    """The workflow's experiment is the CI preset's rendered line, argument for argument."""
    from pipeline.core.config import read_yaml
    from pipeline.core.template import exp_run_line, preset_overrides

    workflow = yaml.safe_load((ROOT / ".github/workflows/pipeline.yml").read_text())
    runs = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
    script = next(run for run in runs if "dvc exp run" in run).replace("\\\n", " ")
    command = next(line for line in script.splitlines() if "dvc exp run" in line)
    preset = read_yaml(ROOT / "presets/ci_fashion_mnist.yaml")
    line = exp_run_line(
        "ci_fashion_mnist", preset_overrides(preset, read_yaml(ROOT / "params.yaml"))
    )
    assert shlex.split(command) == shlex.split(line.replace("\\\n", " "))
    assert line in (ROOT / "docs/presets.md").read_text()
