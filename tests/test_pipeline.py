"""End to end: the real `dvc repro` on the tiny profile in a temporary copy of the repository."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.core.files import sha256_file
from pipeline.models import create_model
from tests.conftest import ROOT, TINY_PARAMS
from tests.helpers import write_fashion_mnist

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def _stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def tiny_project(repo: Path, params: str) -> Path:
    """The project copied into `repo` with `params` as params.yaml and a generated
    Fashion-MNIST, committed, then `dvc repro` (its output in first_run.log)."""
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    for folder in ("pipeline", "stages", ".dvc"):
        shutil.copytree(
            ROOT / folder,
            repo / folder,
            ignore=shutil.ignore_patterns("__pycache__", "cache", "tmp", "config.local"),
        )
    (repo / "params.yaml").write_text(params)
    write_fashion_mnist(repo / "data" / "raw" / "fashion_mnist", n_train=400, n_test=150)
    _run(["git", "init", "-q"], repo)
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-qm", "tiny"], repo)
    first = _run(["dvc", "repro"], repo)
    (repo / "first_run.log").write_text(first.stdout + first.stderr)
    return repo


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project with the tiny profile as params.yaml."""
    return tiny_project(tmp_path_factory.mktemp("repo"), TINY_PARAMS.read_text())


def test_repro_runs_every_stage_and_writes_every_output(repo: Path) -> None:
    log = (repo / "first_run.log").read_text()
    ran = _stages_run(log)
    assert ran == {
        "fetch",
        "prepare",
        "profile",
        "train_teacher",
        "distill@vanilla",
        "distill@sokd",
        "evaluate",
        "export",
        "quantize",
        "verify",
    }
    for path in [
        "data/prepared.pt",
        "models/teacher.pt",
        "models/distill/vanilla/student.pt",
        "models/distill/sokd/student.pt",
        "models/distill/sokd/improved_teacher.pt",
        "models/student.pt",
        "models/student.onnx",
        "models/int8/student.int8.onnx",
        "models/MODEL_CARD.md",
        "dvclive/train_teacher/metrics.json",
        "dvclive/train_teacher/plots/metrics/val/top1.tsv",
        "dvclive/train_teacher/history.png",
        "dvclive/distill/sokd/plots/metrics/train/bridge/kl_teacher.tsv",
        "dvclive/distill/vanilla/history.png",
        "plots/evaluate/images/confusion_sokd_student.png",
        "plots/evaluate/confusion/sokd.csv",
        "plots/evaluate/confusion/vanilla.csv",
        "dvc.lock",
    ]:
        assert (repo / path).is_file(), path
    # The budget is weighed before any training.
    assert log.index("Running stage 'profile'") < log.index("Running stage 'train_teacher'")
    stray = [p.name for p in (repo / "models").rglob(".*") if p.name != ".gitignore"]
    assert stray == []  # no temp files or exporter sidecars left behind


def test_metrics_carry_the_promised_numbers(repo: Path) -> None:
    evaluate = json.loads((repo / "records/evaluate.json").read_text())
    for name in ("teacher", "vanilla/student", "sokd/student", "sokd/improved_teacher"):
        for metric in ("top1", "top5", "params", "macs", "file_bytes"):
            assert f"{name}/{metric}" in evaluate, f"{name}/{metric}"
        assert 0.0 <= evaluate[f"{name}/top1"] <= evaluate[f"{name}/top5"] <= 1.0
    assert evaluate["sokd/student/params"] * 3 <= evaluate["teacher/params"]
    assert 0 <= evaluate["sokd/student/agreement_with_teacher"] <= 1
    assert "sokd/student/gain_over_vanilla" in evaluate
    verify = json.loads((repo / "records/verify.json").read_text())
    assert verify["gate/passed"] is True
    assert verify["int8/size_ratio"] > 3 and verify["int8/agreement"] >= 0.5
    for engine in ("torch", "onnx", "int8"):
        assert verify[f"latency/{engine}_b1_median_ms"] <= verify[f"latency/{engine}_b1_p95_ms"]
        assert verify[f"throughput/{engine}_b64_images_per_s"] > 0
    quantize = json.loads((repo / "records/quantize.json").read_text())
    assert quantize["int8/val_top1_drop"] <= 0.2  # the tiny profile's quantize.max_top1_drop
    card = (repo / "models/MODEL_CARD.md").read_text()
    words = " ".join(card.split())  # the card's prose, whatever its line breaks
    # Speed measured in alternating rounds, and said in words: one of the three sentences.
    assert f"in {verify['latency/rounds']} rounds" in words
    assert "machine that built this card" in words
    assert verify["int8/how"] in words and "opset" in verify["onnx/how"]
    shipped = json.loads((repo / "records/export.json").read_text())["selection/objective"]
    assert f"resnet8 student ({shipped})" in card and "resnet20" in card
    assert "ONNX INT8 (onnxruntime)" in card and "**Why this student.**" in card
    assert "sha256" in card and "git commit" in card and "load_student" in card
    # The model-card convention: a YAML block first (licence, data, metrics, tags, library).
    meta = yaml.safe_load(card.split("---\n")[1])
    assert {"license", "datasets", "metrics", "tags", "library_name"} <= set(meta)
    assert meta["datasets"] == ["fashion_mnist"] and "int8" in meta["tags"]
    scores = meta["model-index"][0]["results"][0]["metrics"]
    assert [m["value"] for m in scores] == [round(verify[f"{t}/top1"], 4) for t in ("onnx", "int8")]
    # Where it is weakest: every class's test top-1, weakest first.
    limits = card.split("## Intended use and limitations", 1)[1].split("## Run it")[0]
    rows = [line for line in limits.splitlines() if line.startswith("| ") and "%" in line]
    per_class = verify["torch/per_class_top1"]
    assert len(rows) == len(per_class) == 10
    shown = [float(r.split("|")[2].strip(" %")) for r in rows]
    assert shown == sorted(shown) and "Licence." in limits
    for name in ("vanilla", "sokd"):  # every student of the one list, the shipped one marked
        assert f"| `{name}`{' **shipped**' if name == shipped else ''} |" in card
    from pipeline.models.checkpoint import load_checkpoint

    spec = load_checkpoint(repo / "models/student.pt").spec
    assert f"Preprocessing, as in evaluation: {spec.describe()}." in card
    from pipeline.shipping.model_card import library_versions

    for package, version in library_versions().items():
        assert verify[f"versions/{package}"] == version and f"{package} {version}" in card
    # The card's example runs as written, from the repository root, and names a class.
    example = card.split("```python\n", 1)[1].split("```", 1)[0]
    ran = subprocess.run(
        [sys.executable, "-c", example], cwd=repo, capture_output=True, text=True, check=False
    )
    assert ran.returncode == 0, ran.stderr
    classes = torch.load(repo / "models/student.pt", weights_only=True)["classes"]
    assert ran.stdout.splitlines() and set(ran.stdout.splitlines()) <= set(classes)
    assert verify["onnx/agreement"] >= 0.999 and verify["onnx/max_abs_logit_diff"] <= 1e-4
    assert verify["onnx/top1"] == evaluate[f"{shipped}/student/top1"] == verify["torch/top1"]
    sokd = json.loads((repo / "records/distill/sokd.json").read_text())
    assert {"val/top1_best", "val/top1_last", "val/best_epoch", "improved_teacher/val_top1"} <= set(
        sokd
    )
    live = repo / "dvclive/distill/sokd"
    for term in ("val/top1", "lr", "train/loss", "train/bridge/kl_teacher", "train/student/ce"):
        rows = (live / "plots/metrics" / f"{term}.tsv").read_text().splitlines()
        assert rows[0].startswith("step\t") and [r.split("\t")[0] for r in rows[1:]] == ["1", "2"]
    # Only meaningful per-epoch charts: no time or memory against the epoch.
    assert not (live / "plots/metrics/time").exists()
    assert not (live / "plots/metrics/memory").exists()
    latest = json.loads((live / "metrics.json").read_text())
    assert latest["step"] == 2 and 0 <= latest["val"]["top1"] <= 1
    confusion = (repo / "plots/evaluate/confusion/sokd.csv").read_text().splitlines()
    assert confusion[0] == "actual,predicted" and len(confusion) == 1 + evaluate["test/images"]


def test_the_shipped_student_is_the_best_on_validation(repo: Path) -> None:
    chosen = json.loads((repo / "records/export.json").read_text())
    val = {name: chosen[f"selection/{name}/val_top1"] for name in ("vanilla", "sokd")}
    # The first listed wins a tie; the figures are the runs' own, after BatchNorm re-estimation.
    assert chosen["selection/objective"] == max(val, key=lambda name: val[name])
    for name, top1 in val.items():
        run = json.loads((repo / f"records/distill/{name}.json").read_text())
        assert run["val/top1_final"] == top1
    shipped = repo / "models/distill" / chosen["selection/objective"] / "student.pt"
    assert (repo / "models/student.pt").read_bytes() == shipped.read_bytes()
    assert chosen["onnx/checkpoint_sha256"] == sha256_file(shipped)
    assert "highest validation top-1" in chosen["selection/reason"]


def test_the_shipped_files_are_dvc_artifacts_fetched_by_name(repo: Path, tmp_path: Path) -> None:
    # The repository's own cache as its remote, a version tag: what a user does with theirs.
    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    shutil.copy(repo / "dvc.lock", clone / "dvc.lock")  # the run's lock, committed in the clone
    _run(["dvc", "remote", "add", "-d", "origin", str(repo / ".dvc" / "cache")], clone)
    _run(["git", "add", "dvc.lock", ".dvc/config"], clone)
    _run(["git", "commit", "-qm", "the run and a remote"], clone)
    _run(["git", "tag", "-a", "student-int8@v1.0.0", "-m", "shipped"], clone)
    fetched = tmp_path / "got"
    fetched.mkdir()
    _run(["dvc", "artifacts", "get", str(clone), "student-int8"], fetched)
    shipped = (repo / "models/int8/student.int8.onnx").read_bytes()
    assert (fetched / "int8" / "student.int8.onnx").read_bytes() == shipped


def _runtime_venv(where: Path) -> Path:
    """A venv holding only the base package (`pip install sokd-pipeline`, no training extra),
    installed from a copy of the sources so that the checkout gains no build folders."""
    source = where / "source"
    for folder in ("pipeline", "stages"):
        shutil.copytree(
            ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [
        str(venv / "bin/python"),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]
    subprocess.run([*pip, str(source)], check=True, capture_output=True, timeout=600)
    return venv


def test_the_shipped_files_run_in_a_venv_without_torch(repo: Path, tmp_path: Path) -> None:
    from PIL import Image

    from pipeline.data.datasets import load_prepared

    venv = _runtime_venv(tmp_path)
    python = str(venv / "bin/python")
    assert subprocess.run([python, "-c", "import torch"], capture_output=True).returncode == 1
    # The test images as PNG files in one folder per class, as a user keeps photos.
    data = load_prepared(repo / "data/prepared.pt", ("test",))
    test = data.splits["test"]
    for i, (image, label) in enumerate(zip(test.images, test.labels.tolist(), strict=True)):
        (tmp_path / "png" / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].numpy()).save(tmp_path / "png" / str(label) / f"{i}.png")
    out = tmp_path / "predictions.json"
    args = [str(venv / "bin/sokd"), "predict", str(tmp_path / "png"), "--top-k", "2"]
    result = subprocess.run([*args, "--out", str(out)], cwd=repo, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())
    assert len(rows) == len(test.labels) and all(len(r["top"]) == 2 for r in rows)
    right = [r["top"][0]["label"] == data.classes[int(Path(r["path"]).parent.name)] for r in rows]
    # The shipped INT8 file on PNG files gives the top-1 verify measured on the tensors.
    verify = json.loads((repo / "records/verify.json").read_text())
    assert abs(sum(right) / len(rows) - verify["int8/top1"]) <= 1 / len(rows)
    # The card's "Run it" snippet, as written, in the same venv.
    card = (repo / "models/MODEL_CARD.md").read_text()
    snippet = card.split("## Run it")[1].split("```python\n")[1].split("```")[0]
    ran = subprocess.run([python, "-c", snippet], cwd=repo, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() and set(ran.stdout.splitlines()) <= set(data.classes)


def test_student_checkpoint_holds_the_student_only(repo: Path) -> None:
    ckpt = torch.load(repo / "models/distill/sokd/student.pt", weights_only=True)
    assert ckpt["arch"] == "resnet8" and ckpt["role"] == "student"
    expected = create_model("resnet8", 10, 1).state_dict()
    assert set(ckpt["state_dict"]) == set(expected)
    assert sum(t.numel() for t in ckpt["state_dict"].values()) == sum(
        t.numel() for t in expected.values()
    )
    improved = torch.load(repo / "models/distill/sokd/improved_teacher.pt", weights_only=True)
    assert improved["arch"] == "resnet20" and improved["role"] == "improved_teacher"


def test_second_repro_reruns_only_the_always_changed_fetch(repo: Path) -> None:
    # fetch runs every time (an image folder lives outside DVC's view); its output unchanged,
    # nothing after it reruns.
    again = _run(["dvc", "repro"], repo)
    assert _stages_run(again.stdout) == {"fetch"}, again.stdout
    status = json.loads(_run(["dvc", "status", "--json"], repo).stdout)
    assert status == {"fetch": ["always changed"]}, status


def test_changing_a_distill_param_reruns_distill_and_what_follows_only(repo: Path) -> None:
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-qm", "tiny run"], repo)
    exp = _run(["dvc", "exp", "run", "-S", "++distill.sokd.temperature=2.0"], repo)
    assert _stages_run(exp.stdout) == {
        "fetch",  # always changed
        "distill@sokd",
        "evaluate",
        "export",
        "quantize",
        "verify",
    }, exp.stdout
    diff = _run(["dvc", "params", "diff"], repo)
    assert "distill.sokd.temperature" in diff.stdout
    metrics = _run(["dvc", "metrics", "diff", "--json"], repo)
    assert "metrics/distill/sokd.json" in json.loads(metrics.stdout)


@pytest.mark.parametrize(
    ("key", "stale"),
    [
        ("distill.seed", {"distill@vanilla", "distill@sokd"}),  # a student seed study
        ("train_teacher.seed", {"train_teacher"}),
        # the data split and the calibration sample (profile's INT8 files calibrate too,
        # and so does export's, which quantizes each student it holds to a budget)
        ("seed", {"prepare", "profile", "export", "quantize"}),
    ],
)
def test_each_seed_reaches_only_its_own_stages(repo: Path, key: str, stale: set[str]) -> None:
    # The students' seed never retrains the teacher: one teacher serves a whole seed study.
    original = (repo / "params.yaml").read_text()
    params = yaml.safe_load(original)
    section, _, name = key.rpartition(".")
    (params[section] if section else params)[name] = 7
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        status = json.loads(_run(["dvc", "status", "--json"], repo).stdout)
    finally:
        (repo / "params.yaml").write_text(original)
    changed = {stage for stage, why in status.items() if "params.yaml" in json.dumps(why)}
    assert changed == stale, status


TRAINING = {"train_teacher", "distill@vanilla", "distill@sokd", "evaluate"}
SHIPPING = {"export", "quantize", "verify"}


@pytest.mark.parametrize(
    ("edited", "stale"),
    [
        ("pipeline/objectives/dkd.py", set()),  # an objective the run does not train
        ("pipeline/objectives/kd.py", set()),
        ("pipeline/objectives/sokd.py", {"distill@vanilla", "distill@sokd"}),  # shared: the bridge
        ("pipeline/models/vgg.py", {"profile"} | TRAINING | SHIPPING),  # every network's folder
        ("pipeline/shipping/int8.py", {"profile"} | SHIPPING),
        ("pipeline/data/batches.py", {"fetch", "prepare", "profile"} | TRAINING | SHIPPING),
    ],
)
def test_a_code_edit_stales_the_stages_of_its_role_only(
    repo: Path, edited: str, stale: set[str]
) -> None:
    path = repo / edited
    original = path.read_text()
    path.write_text(original + "# an edit\n")
    try:
        status = json.loads(_run(["dvc", "status", "--json"], repo).stdout)
    finally:
        path.write_text(original)
    # fetch is "always changed" whatever was edited; stale when it is stale for another reason
    assert {stage for stage, why in status.items() if why != ["always changed"]} == stale, status


def test_the_gate_fails_the_pipeline_with_one_clear_line(repo: Path) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["verify"]["min_top1"] = 1.0
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    failed = _run(["dvc", "repro", "verify"], repo, check=False)
    assert failed.returncode != 0
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error: ")]
    assert (
        len(errors) == 1
        and "verify failed: onnx top-1" in errors[0]
        and "min_top1 1.0" in errors[0]
    )
    assert json.loads((repo / "records/verify.json").read_text())["gate/passed"] is False
    # The command itself: exit status 1 for a missed gate (2 is kept for bad input and usage).
    command = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["verify"]["cmd"]
    direct = _run(command.replace("sokd", str(BIN / "sokd"), 1).split(), repo, check=False)
    assert direct.returncode == 1, direct.stderr


def test_verify_holds_the_shipped_file_to_the_budget(repo: Path, tmp_path: Path) -> None:
    # The command as dvc.yaml runs it, with its own params file and outputs (the repo is shared).
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["verify"]["min_top1"] = 0.0
    command = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["verify"]["cmd"].split()
    for flag, name in (("--record", "r.json"), ("--metrics", "m.json"), ("--card", "card.md")):
        command[command.index(flag) + 1] = str(tmp_path / name)
    size = (repo / "models/int8/student.int8.onnx").stat().st_size
    for limit, passed in ((size, True), (size - 1, False)):
        params["budget"] = {"max_bytes": limit, "latency_ms": 1000.0}
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        args = [str(BIN / "sokd"), *command[1:], "--params", str(tmp_path / "params.yaml")]
        done = _run(args, repo, check=False)
        record = json.loads((tmp_path / "r.json").read_text())
        assert record["budget/passed"] is passed and record["budget/file"] == "int8"
        assert record["budget/bytes"] == size and 0 < record["budget/latency_p90_ms"] < 1000
        assert done.returncode == (0 if passed else 1), done.stderr
        if passed:
            assert "**Budget: met** by the int8 file" in (tmp_path / "card.md").read_text()
        if not passed:
            errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
            missed = f"over budget: {size:,} bytes > budget.max_bytes"
            assert len(errors) == 1 and missed in errors[0]


def test_dvc_plots_are_the_meaningful_ones(repo: Path) -> None:
    shown = _run(["dvc", "plots", "show", "--json"], repo)
    ids = list(json.loads(shown.stdout)["data"])
    # Every network's validation curve on one chart, a confusion matrix per student, pictures;
    # no chart per metric per stage (one point each after a one-epoch run).
    assert "plots/evaluate/validation.csv" in ids
    assert any("confusion/sokd.csv" in i for i in ids)
    assert not [i for i in ids if i.endswith(".tsv")]
    rows = (repo / "plots/evaluate/validation.csv").read_text().splitlines()
    networks = {row.split(",")[1] for row in rows[1:]}
    assert networks == {
        "teacher",
        "vanilla",
        "sokd",
        *(f"{n} (saved)" for n in ("teacher", "vanilla", "sokd")),
    }
    assert len(rows) == 1 + 3 * (2 + 1)  # 2 epochs each, and the saved network


def test_an_objective_added_to_the_one_list_is_trained_and_evaluated(repo: Path) -> None:
    _run(["git", "checkout", "params.yaml"], repo)  # undo what earlier tests set
    exp = _run(
        [
            "dvc",
            "exp",
            "run",
            "-S",
            "distill.objectives=[vanilla,kd,sokd]",
            "-S",
            "++distill.kd={}",
        ],
        repo,
    )
    assert "distill@kd" in _stages_run(exp.stdout)
    assert not {"distill@vanilla", "train_teacher"} & _stages_run(exp.stdout)
    evaluate = json.loads((repo / "records/evaluate.json").read_text())
    assert 0 <= evaluate["kd/student/top1"] <= 1
    assert (repo / "plots/evaluate/confusion/kd.csv").is_file()
    assert (repo / "dvclive/distill/kd/plots/metrics/train/student/kd.tsv").is_file()


def test_experiments_never_touch_your_image_folder(tmp_path: Path) -> None:
    """`dvc exp run` checks out the baseline's outputs, emptying any it has not cached: the
    user's photos live outside them (prepare.folder) and `fetch` mirrors them, on every run."""
    from tests.helpers import write_image_folder

    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    for folder in ("pipeline", "stages", ".dvc"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=shutil.ignore_patterns(
            "__pycache__", "cache", "tmp", "config.local"))  # fmt: skip
    shutil.copy(TINY_PARAMS, repo / "params.yaml")
    write_fashion_mnist(repo / "data" / "raw" / "fashion_mnist", n_train=40, n_test=20)
    for split in ("train", "val"):
        write_image_folder(repo / "images" / split, ["cat", "dog"], per_class=3, size=12)
    before = {p: p.read_bytes() for p in (repo / "images").rglob("*.png")}
    for args in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "t"]):
        _run(args, repo)
    _run(["dvc", "repro", "fetch"], repo)  # the baseline's lock knows only Fashion-MNIST
    _run(["dvc", "exp", "run", "fetch", "-S", "prepare.dataset=imagefolder"], repo)
    assert {p: p.read_bytes() for p in (repo / "images").rglob("*.png")} == before
    mirror = repo / "data" / "raw" / "imagefolder" / "train" / "cat" / "0.png"
    mirrored = {p.relative_to(mirror.parents[2]) for p in mirror.parents[2].rglob("*.png")}
    assert mirrored == {p.relative_to(repo / "images") for p in before}
    assert mirror.read_bytes() == before[repo / "images" / "train" / "cat" / "0.png"]
    # A photo added later reaches the mirror at the next run (fetch always runs).
    shutil.copy(
        repo / "images" / "train" / "cat" / "0.png", repo / "images" / "train" / "cat" / "new.png"
    )
    _run(["dvc", "exp", "run", "fetch"], repo)
    assert (mirror.parent / "new.png").is_file() and len(before) + 1 == len(
        list((repo / "images").rglob("*.png"))
    )
