"""The `sokd` command: a command per dvc.yaml stage, --help, one-line errors on bad input."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from stages.cli import app
from tests.conftest import ROOT, TINY_PARAMS

COMMANDS = [
    "fetch",
    "prepare",
    "profile",
    "train_teacher",
    "distill",
    "evaluate",
    "export",
    "quantize",
    "verify",
]
SOKD = str(Path(sys.executable).parent / "sokd")


def test_dvc_stages_cli_commands_and_params_sections_agree() -> None:
    stages = set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    # predict is the one command that is no stage: it runs a shipped file on images
    commands = set(typer.main.get_command(app).commands) - {"predict"}
    shared = {"seed", "runtime", "budget"}  # budget: held by profile now, by the gate later
    sections = set(yaml.safe_load((ROOT / "params.yaml").read_text())) - shared
    # fetch and profile have no knobs of their own: fetch obtains prepare.dataset, profile weighs
    # distill's candidates against the budget.
    assert stages == commands == sections | {"fetch", "profile"} == set(COMMANDS)
    for stage_file in COMMANDS:
        assert (ROOT / "stages" / f"{stage_file}.py").is_file()


def test_every_stage_reads_only_its_own_params_sections() -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    # The documented reads across sections: the one list of objectives (evaluate and export find
    # every student by it) and the INT8 gate that quantize meets on validation (verify.int8).
    # And profile: the candidate students, built into ONNX and INT8 files as export and quantize
    # build the shipped ones.
    crossing = {"distill.objectives", "verify.int8", "prepare.dataset", "prepare.folder"}
    crossing |= {"distill.arch", "distill.candidates", "quantize"}
    crossing |= {"export.input", "export.opset", "export.exporter"}
    for name, stage in stages.items():
        for key in map(str, stage["params"]):
            own = {name, "seed", "runtime", "budget"}
            assert key.split(".")[0] in own or key in crossing, (name, key)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "--params" in result.output


@pytest.mark.parametrize("args", [["--help"], *[[c, "--help"] for c in COMMANDS], ["--version"]])
def test_help_and_version_answer_without_importing_torch(args: list[str]) -> None:
    probe = (
        "import sys\n"
        "from stages.cli import app\n"
        "try:\n"
        f"    app({args!r})\n"
        "except SystemExit as end:\n"
        "    assert end.code in (0, None), end.code\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("torch imported: False"), result.stdout


def test_version_prints_the_package_version() -> None:
    import importlib.metadata

    __version__ = importlib.metadata.version("sokd-pipeline")

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"sokd {__version__}"


def test_objective_is_a_choice_of_the_registered_objectives() -> None:
    from pipeline.objectives import OBJECTIVES
    from stages.distill import OBJECTIVE_NAMES

    assert OBJECTIVES.names() == OBJECTIVE_NAMES
    result = CliRunner().invoke(app, ["distill", "--help"], env={"COLUMNS": "400"})
    assert "|".join(OBJECTIVES.names()) in result.output


def _sokd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [SOKD, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300
    )


def _one_line_error(result: subprocess.CompletedProcess[str], pattern: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert pattern in lines[0], lines[0]


def _params_with(tmp_path: Path, section: str, key: str, value: object) -> Path:
    raw = yaml.safe_load(TINY_PARAMS.read_text())
    node = raw
    for part in section.split("."):
        node = node[part]
    node[key] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("prepare", "dataset", "mnist", "params.prepare.dataset: unknown dataset 'mnist'"),
        (
            "distill.train.optim",
            "lr",
            "0.1",
            "params.distill.train.optim.lr: expected float, got '0.1'",
        ),
        ("distill", "temperature", 4.0, "params.distill.temperature: unknown key"),
    ],
)
def test_bad_params_are_one_line_and_keep_existing_outputs(
    tmp_path: Path, fashion_raw: Path, section: str, key: str, value: object, message: str
) -> None:
    params = _params_with(tmp_path, section, key, value)
    (tmp_path / "d.pt").write_bytes(b"earlier output")
    args = [
        "--raw",
        str(fashion_raw),
        "--out",
        "d.pt",
        "--metrics",
        "m.json",
        "--params",
        str(params),
    ]
    _one_line_error(_sokd("prepare", *args, cwd=tmp_path), message)
    assert (tmp_path / "d.pt").read_bytes() == b"earlier output"


def test_missing_dataset_is_one_line(tmp_path: Path) -> None:
    result = _sokd(
        "prepare",
        "--raw",
        str(tmp_path / "nothing"),
        "--out",
        "d.pt",
        "--metrics",
        "m.json",
        "--params",
        str(TINY_PARAMS),
        cwd=tmp_path,
    )
    _one_line_error(result, "cannot read Fashion-MNIST")
    assert not (tmp_path / "d.pt").exists()


def _export(cwd: Path) -> subprocess.CompletedProcess[str]:
    args = ["--runs", "runs", "--teacher", "t.pt", "--student", "s.pt", "--out", "s.onnx"]
    return _sokd("export", *args, "--metrics", "m.json", "--params", str(TINY_PARAMS), cwd=cwd)


def test_missing_student_is_one_line(tmp_path: Path) -> None:
    _one_line_error(_export(tmp_path), "student not found: runs/vanilla/student.pt")


def test_corrupted_checkpoint_is_one_line_and_nothing_is_written(tmp_path: Path) -> None:
    (tmp_path / "runs" / "vanilla").mkdir(parents=True)
    (tmp_path / "runs/vanilla/student.pt").write_bytes(b"PK\x03\x04 not really a zip archive")
    (tmp_path / "s.onnx").write_bytes(b"previous export")
    _one_line_error(_export(tmp_path), "cannot read checkpoint runs/vanilla/student.pt")
    assert (tmp_path / "s.onnx").read_bytes() == b"previous export"
    assert not (tmp_path / "s.pt").exists()


def test_missing_prepared_dataset_is_one_line(tmp_path: Path) -> None:
    result = _sokd(
        "train_teacher",
        "--data",
        "absent.pt",
        "--out",
        "t.pt",
        "--metrics",
        "m.json",
        "--live",
        "p",
        "--params",
        str(TINY_PARAMS),
        cwd=tmp_path,
    )
    _one_line_error(result, "prepared dataset not found: absent.pt")


def test_prepare_command_writes_its_outputs(tmp_path: Path, fashion_raw: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "prepare",
            "--raw",
            str(fashion_raw),
            "--out",
            str(tmp_path / "d.pt"),
            "--metrics",
            str(tmp_path / "m.json"),
            "--params",
            str(TINY_PARAMS),
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = yaml.safe_load((tmp_path / "m.json").read_text())
    assert (
        metrics["images/train"] == 300
        and metrics["images/val"] == 100
        and metrics["images/test"] == 120
    )


def test_unknown_objective_is_one_line(tmp_path: Path, prepared_path: Path) -> None:
    result = _sokd(
        "distill",
        "--objective",
        "crd",
        "--data",
        str(prepared_path),
        "--teacher",
        "t.pt",
        "--out",
        "o",
        "--metrics",
        "m.json",
        "--live",
        "p",
        "--params",
        str(TINY_PARAMS),
        cwd=tmp_path,
    )
    _one_line_error(
        result,
        "unknown objective 'crd'; choose one of at, dist, dkd, dml, fitnet, kd, kd_dml, sokd",
    )


# A command that fails the way a bug does, or waits to be interrupted, added to the real `sokd`
# group in a child process: the exit statuses a CI script reads come from that group.
_FAULTY = """
import sys, time
import typer
from stages.cli import app, main
from stages.common import one_line_errors

@app.command("faulty")
@one_line_errors
def faulty(wait: bool = False) -> None:
    if wait:
        print("ready", flush=True)
        time.sleep(60)
    raise KeyError("a key the code forgot")

sys.argv = ["sokd", *sys.argv[1:]]
main()
"""


def _faulty(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", _FAULTY, *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_an_internal_error_is_a_bug_of_its_own_status_in_one_line() -> None:
    done = _faulty("faulty")
    assert done.returncode == 3, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: internal error, a bug in sokd")
    assert "KeyError" in lines[0] and "rerun with -v for the traceback" in lines[0]
    verbose = _faulty("-v", "faulty")
    assert verbose.returncode == 3
    assert "Traceback (most recent call last)" in verbose.stderr
    assert verbose.stderr.strip().splitlines()[-1].startswith("error: internal error")


def test_an_interrupted_command_exits_130() -> None:
    import signal

    child = subprocess.Popen(
        [sys.executable, "-c", _FAULTY, "faulty", "--wait"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A job started in the background inherits SIGINT ignored, and Python then never turns
        # it into KeyboardInterrupt: give the child the default, as a terminal would.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGINT)  # what Ctrl-C sends
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("error: interrupted"), err
