"""Bad input, everywhere: one `error:` line, exit status 2, and no existing output overwritten.

Each case builds its inputs in a fresh folder (from real artifacts, then damaged), puts an earlier
output where the command would write, runs the real `sokd` command, and checks the message, the exit
status and that the earlier output is untouched.
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from pipeline.core.config import ExportConfig
from pipeline.core.params import load_params
from pipeline.data.datasets import Prepared, load_prepared, prepare, save_prepared
from pipeline.models import create_model
from pipeline.models.checkpoint import load_checkpoint, save_checkpoint
from pipeline.shipping.int8 import quantize_int8
from pipeline.shipping.model_card import card_keys
from pipeline.shipping.onnx import export_onnx
from stages.cli import app
from tests.conftest import TINY_PARAMS
from tests.helpers import write_bomb_png, write_fashion_mnist, write_image_folder

EARLIER = b"an earlier, good output"


@dataclass
class Kit:
    folder: Path  # where the command runs
    params: dict  # the tiny profile, to edit
    built: Path  # real artifacts to start from

    def copy(self, *names: str) -> None:
        for name in names:
            shutil.copy(self.built / name, self.folder / name)

    def set(self, dotted: str, value: object) -> None:
        *sections, key = dotted.split(".")
        node = self.params
        for part in sections:
            node = node[part]
        node[key] = value

    def drop(self, dotted: str) -> None:
        *sections, key = dotted.split(".")
        node = self.params
        for part in sections:
            node = node[part]
        del node[key]

    def student(self, source: Path | None = None) -> Path:
        """The checkpoint `export` reads (STUDENT), copied from `source` when given."""
        path = self.folder / STUDENT
        path.parent.mkdir(parents=True, exist_ok=True)
        if source is not None:
            shutil.copy(source, path)
        return path

    def truncate(self, name: str, keep: int) -> None:
        path = self.folder / name
        path.write_bytes(path.read_bytes()[:keep])

    def folders(self) -> Path:
        """Generated train/ and val/ image folders (8x8 PNGs, classes a and b) as the dataset."""
        raw = self.folder / "raw"
        write_image_folder(raw / "train", ["a", "b"], per_class=4, size=8)
        write_image_folder(raw / "val", ["a", "b"], per_class=2, size=8)
        self.params["prepare"].update(dataset="imagefolder", val_size=2)
        return raw


@dataclass(frozen=True)
class Case:
    name: str
    setup: Callable[[Kit], object]
    args: list[str]
    message: str
    output: str  # what the command writes on success: an earlier version must survive failure


PREPARE = ["prepare", "--raw", "raw", "--out", "data.pt", "--metrics", "m.json"]
TEACHER = [
    "train_teacher",
    "--data",
    "data.pt",
    "--out",
    "teacher.pt",
    "--metrics",
    "m.json",
    "--live",
    "plots",
]
DISTILL = [
    "distill",
    "--objective",
    "sokd",
    "--data",
    "data.pt",
    "--teacher",
    "teacher3.pt",
    "--out",
    "sokd",
    "--metrics",
    "m.json",
    "--live",
    "plots",
]
# export picks among runs/<objective>/student.pt: the tiny profile's objectives are set to [sokd]
# for these cases, so the checkpoint under test is runs/sokd/student.pt (STUDENT).
EXPORT = [
    "export",
    "--runs",
    "runs",
    "--teacher",
    "teacher3.pt",
    "--student",
    "shipped.pt",
    "--out",
    "student.onnx",
    "--metrics",
    "m.json",
]
STUDENT = "runs/sokd/student.pt"
QUANTIZE = [
    "quantize",
    "--onnx",
    "student.onnx",
    "--data",
    "data.pt",
    "--out",
    "student.int8.onnx",
    "--metrics",
    "q.json",
]
VERIFY = [
    "verify",
    "--artifact",
    "student.onnx",
    "--artifact",
    "student.int8.onnx",
    "--checkpoint",
    "student.pt",
    "--data",
    "data.pt",
    "--evaluation",
    "evaluate.json",
    "--selection",
    "export.json",
    "--metrics",
    "v.json",
    "--card",
    "card.md",
]
ARTIFACTS = (
    "data.pt",
    "student.pt",
    "student.onnx",
    "student.int8.onnx",
    "evaluate.json",
    "export.json",
)


def _evil(kit: Kit) -> None:
    class Payload:
        def __reduce__(self):
            return (Path.touch, (kit.folder / "PWNED",))

    torch.save(
        {"format": "sokd-checkpoint/1", "arch": Payload()}, kit.student(), pickle_module=pickle
    )


def _other_onnx(kit: Kit) -> None:
    kit.copy(*ARTIFACTS)
    other = ExportConfig(objective="sokd", exporter="torchscript", opset=17)
    export_onnx(load_checkpoint(kit.folder / "student.pt"), kit.folder / "student.onnx", other)


CASES = [
    # params.yaml
    Case(
        "unknown key",
        lambda k: k.set("distill.sokd.temprature", 4.0),
        DISTILL,  # an objective's section is checked by the stage that trains it
        "params.distill.sokd.temprature: unknown key",
        "sokd",
    ),
    Case(
        "unknown objective in the list",
        lambda k: k.set("distill.objectives", ["vanilla", "skod"]),
        PREPARE,
        "params.distill.objectives[1]: unknown objective 'skod'",
        "data.pt",
    ),
    Case(
        "string for a float",
        lambda k: k.set("distill.train.optim.weight_decay", "5e-4 per step"),
        PREPARE,
        "weight_decay: expected float, got '5e-4 per step'",
        "data.pt",
    ),
    Case(
        "float for an int",
        lambda k: k.set("distill.train.epochs", 2.5),
        PREPARE,
        "params.distill.train.epochs: expected int",
        "data.pt",
    ),
    Case(
        "negative learning rate",
        lambda k: k.set("train_teacher.train.optim.lr", -0.1),
        PREPARE,
        "params.train_teacher.train.optim.lr: must be > 0",
        "data.pt",
    ),
    Case(
        "temperature of zero",
        lambda k: k.set("distill.sokd.temperature", 0.0),
        DISTILL,
        "params.distill.sokd.temperature: must be > 0",
        "sokd",
    ),
    Case(
        "unknown model",
        lambda k: k.set("distill.arch", "resnet9"),
        DISTILL,
        "params.distill.arch: unknown model 'resnet9'; choose one of",
        "sokd",
    ),
    Case(
        "unknown dataset",
        lambda k: k.set("prepare.dataset", "mnist"),
        PREPARE,
        "params.prepare.dataset: unknown dataset 'mnist'",
        "data.pt",
    ),
    Case(
        "value not among the choices",
        lambda k: k.set("distill.sokd.teacher_bn", "frozen"),
        DISTILL,
        "teacher_bn: expected one of eval, train, got 'frozen'",
        "sokd",
    ),
    Case(
        "fraction out of range",
        lambda k: k.set("verify.int8", {"min_agreement": 2.0}),
        PREPARE,
        "params.verify.int8.min_agreement: is a fraction in [0, 1]",
        "data.pt",
    ),
    Case(
        "shipping an objective that was not trained",
        lambda k: k.set("export.objective", "dkd"),
        PREPARE,
        "params.export.objective: 'dkd' is not trained",
        "data.pt",
    ),
    Case(
        "GPU asked for, none there",
        lambda k: k.set("runtime.device", "cuda"),
        TEACHER,
        "no CUDA device is visible",
        "teacher.pt",
    ),
    Case(
        "fp16 on a CPU",
        lambda k: k.set("runtime.amp", "fp16"),
        TEACHER,
        "fp16 needs a CUDA device",
        "teacher.pt",
    ),
    # datasets
    Case("no dataset files", lambda k: None, PREPARE, "cannot read Fashion-MNIST", "data.pt"),
    Case(
        "truncated IDX file",
        lambda k: (
            write_fashion_mnist(k.folder / "raw", 200, 50),
            k.truncate("raw/FashionMNIST/raw/train-images-idx3-ubyte", 3000),
        ),
        PREPARE,
        "cannot read Fashion-MNIST",
        "data.pt",
    ),
    Case(
        "unreadable image",
        lambda k: (k.folders() / "train" / "a" / "0.png").write_bytes(b"junk"),
        PREPARE,
        "cannot read image",
        "data.pt",
    ),
    Case(
        "image damaged in a folder kept on disk",
        lambda k: (
            k.folders(),
            k.set("prepare.storage", "files"),
            (k.folder / "raw" / "val" / "b" / "1.png").write_bytes(b"\x89PNG\r\n"),
        ),
        PREPARE,
        "cannot read image",
        "data.pt",
    ),
    Case(
        "files storage for a dataset that is not a folder",
        lambda k: k.set("prepare.storage", "files"),
        PREPARE,
        "storage: files works only with dataset imagefolder",
        "data.pt",
    ),
    Case(
        "class folder without images",
        lambda k: (k.folders() / "train" / "c").mkdir(),
        PREPARE,
        "has no images",
        "data.pt",
    ),
    Case(
        "image folder with one class",
        lambda k: [shutil.rmtree(raw / s / "b") for raw in [k.folders()] for s in ("train", "val")],
        PREPARE,
        "a classifier needs at least two",
        "data.pt",
    ),
    Case(
        "test classes differ",
        lambda k: shutil.rmtree(k.folders() / "val" / "b"),
        PREPARE,
        "val has classes ['a'] but",
        "data.pt",
    ),
    Case(
        "images of mixed sizes",
        lambda k: write_image_folder(k.folders() / "train", ["a"], 1, 12, 5),
        PREPARE,
        "differ in size",
        "data.pt",
    ),
    Case(
        "validation split too large",
        lambda k: (write_fashion_mnist(k.folder / "raw", 200, 50), k.set("prepare.val_size", 500)),
        PREPARE,
        "leaves no training images",
        "data.pt",
    ),
    Case(
        "missing prepared data", lambda k: None, TEACHER, "prepared dataset not found", "teacher.pt"
    ),
    Case(
        "truncated prepared data",
        lambda k: (k.copy("data.pt"), k.truncate("data.pt", 4000)),
        TEACHER,
        "cannot read prepared dataset",
        "teacher.pt",
    ),
    Case(
        "dataset with other classes than the teacher",
        lambda k: k.copy("data.pt", "teacher3.pt"),
        DISTILL,
        "was trained for 3 classes x 1 channels, the data has 10",
        "sokd",
    ),
    # checkpoints
    Case("missing student", lambda k: None, EXPORT, "student not found: runs/sokd", "student.onnx"),
    Case(
        "random bytes as checkpoint",
        lambda k: k.student().write_bytes(b"\0junk" * 9),
        EXPORT,
        "cannot read checkpoint",
        "student.onnx",
    ),
    Case(
        "truncated checkpoint",
        lambda k: (k.student(k.built / "student.pt"), k.truncate(STUDENT, 9000)),
        EXPORT,
        "cannot read checkpoint",
        "student.onnx",
    ),
    Case("pickle that would run code", _evil, EXPORT, "cannot read checkpoint", "student.onnx"),
    Case(
        "a torch file that is not a checkpoint",
        lambda k: k.student(k.built / "data.pt"),
        EXPORT,
        "is not a sokd-checkpoint/1 checkpoint",
        "student.onnx",
    ),
    Case(
        "weights of another architecture",
        lambda k: k.student(k.built / "wrong-arch.pt"),
        EXPORT,
        "weights do not fit architecture 'resnet8'",
        "student.onnx",
    ),
    Case(
        "weights that are NaN",
        lambda k: k.student(k.built / "nan-student.pt"),
        EXPORT,
        "has non-finite weights (NaN or inf in",
        "student.onnx",
    ),
    Case(
        "a student that records no validation top-1",
        lambda k: k.student(k.built / "unmeasured.pt"),
        EXPORT,
        "records no validation top-1",
        "student.onnx",
    ),
    Case(
        "a teacher exported as the student",
        lambda k: k.student(k.built / "teacher3.pt"),
        EXPORT,
        "holds a teacher (resnet8), not a student",
        "student.onnx",
    ),
    # training
    Case(
        "batch larger than the training split",
        lambda k: (k.copy("data.pt"), k.set("train_teacher.train.batch_size", 100000)),
        TEACHER,
        "params.train_teacher.train.batch_size: 100000 is larger than the 200 training images",
        "teacher.pt",
    ),
    Case(
        "loss that diverges",
        lambda k: (k.copy("data.pt"), k.set("train_teacher.train.optim.lr", 1.0e12)),
        TEACHER,
        "training loss became NaN or infinite",
        "teacher.pt",
    ),
    Case(
        "students trained for zero epochs",
        lambda k: (k.copy("data.pt", "teacher3.pt"), k.set("distill.train.epochs", 0)),
        DISTILL,
        "params.distill.train.epochs is 0",
        "sokd",
    ),
    Case(
        "damaged training state",
        lambda k: (k.copy("data.pt"), (k.folder / "s.pt").write_bytes(b"PK")),
        [*TEACHER, "--state", "s.pt"],
        "cannot read training state",
        "teacher.pt",
    ),
    # the gate
    Case(
        "damaged ONNX file",
        lambda k: (k.copy(*ARTIFACTS), k.truncate("student.onnx", 5000)),
        VERIFY,
        "student.onnx is not a readable ONNX file",
        "v.json",
    ),
    Case(
        "INT8 made from another ONNX file",
        _other_onnx,
        VERIFY,
        "produced from a different student.onnx",
        "v.json",
    ),
    Case(
        "missing selection metrics",
        lambda k: (k.copy(*ARTIFACTS), (k.folder / "export.json").unlink()),
        VERIFY,
        "export metrics not found",
        "v.json",
    ),
    Case(
        "missing evaluation metrics",
        lambda k: (k.copy(*ARTIFACTS), (k.folder / "evaluate.json").unlink()),
        VERIFY,
        "evaluate metrics not found",
        "v.json",
    ),
    # files of the wrong kind where a file belongs (issue 30)
    Case(
        "a directory as the ONNX file to write",
        lambda k: (
            k.set("distill.objectives", ["sokd"]),
            k.copy("teacher3.pt"),
            k.student(k.built / "student.pt"),
        ),
        [*EXPORT[:-4], "--out", "runs", *EXPORT[-2:]],
        "runs is a directory; give the path of the file to write there",
        "student.onnx",
    ),
    Case(
        "a directory as the metrics file: nothing is written before it is refused",
        lambda k: (
            k.set("distill.objectives", ["sokd"]),
            k.copy("teacher3.pt"),
            k.student(k.built / "student.pt"),
            (k.folder / "m.json").mkdir(),
        ),
        [*EXPORT[:-2], "--metrics", "m.json"],
        "m.json is a directory; give the path of the file to write there",
        "student.onnx",
    ),
    Case(
        "a file as the runs folder",
        lambda k: k.copy("student.pt"),
        [*EXPORT[:2], "student.pt", *EXPORT[3:]],
        "--runs student.pt is a file; give the folder of `distill` outputs",
        "student.onnx",
    ),
    Case(
        "a directory as the checkpoint",
        lambda k: (k.copy(*ARTIFACTS), (k.folder / "ckpt").mkdir()),
        [*VERIFY[:5], "--checkpoint", "ckpt", *VERIFY[7:]],
        "ckpt is a directory, not a checkpoint file",
        "v.json",
    ),
    Case(
        "a directory as the params file",
        lambda k: (k.folder / "folder").mkdir(),
        [*PREPARE, "--params", "folder"],
        "folder is a directory; give the params file",
        "data.pt",
    ),
    Case(
        "a picture larger than Pillow's limit, in memory",
        lambda k: write_bomb_png(k.folders() / "train" / "a" / "9.png"),
        PREPARE,
        "exceeds limit of 178956970 pixels (Pillow's guard against decompression bombs)",
        "data.pt",
    ),
    Case(
        "a picture larger than Pillow's limit, kept on disk",
        lambda k: (
            write_bomb_png(k.folders() / "val" / "b" / "9.png"),
            k.set("prepare.storage", "files"),
        ),
        PREPARE,
        "exceeds limit",
        "data.pt",
    ),
    Case(
        "a truncated picture kept on disk names the file",
        lambda k: (
            k.folders(),
            k.set("prepare.storage", "files"),
            k.truncate("raw/train/b/2.png", 6),
        ),
        PREPARE,
        "cannot read image raw/train/b/2.png: not an image Pillow can identify",
        "data.pt",
    ),
    Case(
        "truncated evaluation metrics",
        lambda k: (k.copy(*ARTIFACTS), k.truncate("evaluate.json", 9)),
        VERIFY,
        "evaluate metrics evaluate.json is not valid JSON",
        "v.json",
    ),
    Case(
        "evaluation metrics without the card's figures",
        lambda k: (k.copy(*ARTIFACTS), (k.folder / "evaluate.json").write_text("{}")),
        VERIFY,
        "evaluate metrics evaluate.json lack teacher/top1, sokd/student/params",
        "v.json",
    ),
    Case(
        "selection metrics that are a list",
        lambda k: (k.copy(*ARTIFACTS), (k.folder / "export.json").write_text("[1]")),
        VERIFY,
        "export metrics export.json holds a JSON list, not an object",
        "v.json",
    ),
    Case(
        "a foreign ONNX file without provenance",
        lambda k: (
            k.copy(*ARTIFACTS),
            shutil.copy(k.built / "foreign.onnx", k.folder / "student.onnx"),
        ),
        VERIFY[:3] + VERIFY[5:],  # the fp32 file alone
        "student.onnx records no provenance (checkpoint_sha256)",
        "v.json",
    ),
    Case(
        "a checkpoint given as an artifact",
        lambda k: k.copy(*ARTIFACTS),
        ["verify", "--artifact", "student.pt", *VERIFY[5:]],
        "student.pt is a torch checkpoint (.pt), not an ONNX file",
        "v.json",
    ),
    Case(
        "a truncated fp32 ONNX file to quantize",
        lambda k: (k.copy(*ARTIFACTS), k.truncate("student.onnx", 3000)),
        QUANTIZE,
        "student.onnx is not a readable ONNX file",
        "student.int8.onnx",
    ),
    Case(
        "garbage as the ONNX file to quantize",
        lambda k: (k.copy("data.pt"), (k.folder / "student.onnx").write_bytes(b"\xff" * 999)),
        QUANTIZE,
        "student.onnx is not a readable ONNX file",
        "student.int8.onnx",
    ),
    Case(
        "an empty ONNX file to quantize",
        lambda k: (k.copy("data.pt"), (k.folder / "student.onnx").write_bytes(b"")),
        QUANTIZE,
        "student.onnx is empty (0 bytes)",
        "student.int8.onnx",
    ),
    Case(
        "an ONNX file whose input is not images",
        lambda k: (
            k.copy("data.pt"),
            shutil.copy(k.built / "foreign-input.onnx", k.folder / "student.onnx"),
        ),
        QUANTIZE,
        "student.onnx takes inputs ['x'], not one named 'images'",
        "student.int8.onnx",
    ),
    Case(
        "an INT8 file to quantize again",
        lambda k: (
            k.copy("data.pt"),
            shutil.copy(k.built / "student.int8.onnx", k.folder / "student.onnx"),
        ),
        QUANTIZE,
        "student.onnx is already quantized (",
        "student.int8.onnx",
    ),
    Case(
        "a split point the teacher does not have",
        lambda k: (k.copy("data.pt", "teacher10.pt"), k.set("distill.sokd.split", "stage9")),
        [*DISTILL[:6], "teacher10.pt", *DISTILL[7:]],
        "params.distill.sokd.split: cannot split",
        "sokd",
    ),
]


def _briefly_trained(data: Prepared, steps: int = 30) -> torch.nn.Module:
    """A resnet8 student a few SGD steps into fitting random labels: its predictions vary with
    the image and many sit near a decision boundary, as a weak student's do (an untrained one
    names one class for every image, a well trained one on these images is sure of each)."""
    model = create_model("resnet8", 10, 1)
    train = data.splits["train"]
    labels = torch.randint(0, 10, train.labels.shape, generator=torch.Generator().manual_seed(0))
    mean, std = torch.tensor(data.mean).view(1, -1, 1, 1), torch.tensor(data.std).view(1, -1, 1, 1)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for step in range(steps):
        pick = torch.arange(step * 32, step * 32 + 32) % len(train.labels)
        images = (train.images[pick].float() / 255 - mean) / std
        loss = torch.nn.functional.cross_entropy(model(images), labels[pick])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real artifacts: prepared data, a student, its ONNX files, a teacher for 3 classes."""
    root = tmp_path_factory.mktemp("built")
    torch.manual_seed(0)  # the same networks whichever tests ran before in this process
    params = load_params(TINY_PARAMS)
    write_fashion_mnist(root / "raw", n_train=300, n_test=60)
    save_prepared(root / "data.pt", prepare(root / "raw", params.prepare, 0))
    data = load_prepared(root / "data.pt", ("train", "val"))
    trained = {"val/top1_final": 0.5}  # what `export` compares students by
    for name, arch, source, metrics in (
        ("student.pt", "resnet8", "resnet8", trained),
        ("wrong-arch.pt", "resnet8", "resnet20", trained),
        ("unmeasured.pt", "resnet8", "resnet8", {}),
    ):
        save_checkpoint(
            root / name,
            _briefly_trained(data) if name == "student.pt" else create_model(source, 10, 1).eval(),
            arch=arch,
            role="student",
            data=data,
            params={"objective": "sokd"},
            metrics=metrics,
        )
    broken = create_model("resnet8", 10, 1)
    with torch.no_grad():
        next(broken.parameters()).fill_(float("nan"))
    save_checkpoint(
        root / "nan-student.pt",
        broken,
        arch="resnet8",
        role="student",
        data=data,
        params={"objective": "sokd"},
        metrics=trained,
    )
    save_checkpoint(
        root / "teacher10.pt",
        create_model("resnet8", 10, 1),
        arch="resnet8",
        role="teacher",
        data=data,
        params={},
        metrics=trained,
    )
    three = Prepared(data.dataset, ("x", "y", "z"), data.mean, data.std, data.splits)
    save_checkpoint(
        root / "teacher3.pt",
        create_model("resnet8", 3, 1),
        arch="resnet8",
        role="teacher",
        data=three,
        params={},
        metrics=trained,
    )
    export_onnx(load_checkpoint(root / "student.pt"), root / "student.onnx", params.export)
    int8 = root / "student.int8.onnx"
    quantize_int8(root / "student.onnx", int8, data, params.quantize, params.verify.int8, 0)
    card = dict.fromkeys(card_keys("sokd"), 0.5)
    (root / "evaluate.json").write_text(json.dumps(card))
    foreign = create_model("resnet8", 10, 1).eval()  # an ONNX file not made by `sokd export`
    for name, input_name in (("foreign.onnx", "images"), ("foreign-input.onnx", "x")):
        torch.onnx.export(
            foreign,
            (torch.zeros(2, 1, 28, 28),),
            str(root / name),
            input_names=[input_name],
            output_names=["logits"],
            dynamic_axes={input_name: {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )
    (root / "export.json").write_text('{"selection/objective": "sokd"}')
    return root


def test_there_are_at_least_25_cases() -> None:
    assert len(CASES) >= 25 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_exit_2_and_keeps_earlier_output(
    case: Case, built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit = Kit(tmp_path, yaml.safe_load(TINY_PARAMS.read_text()), built)
    if case.args is EXPORT:  # one candidate, runs/sokd/student.pt, and a teacher to compare
        kit.set("distill.objectives", ["sokd"])
        kit.copy("teacher3.pt")
    case.setup(kit)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(kit.params))
    earlier = tmp_path / case.output
    if earlier.suffix:  # a file output; a directory output is checked for absence below
        if earlier.exists():
            earlier.unlink()
        earlier.write_bytes(EARLIER)
    monkeypatch.chdir(tmp_path)
    given = [] if "--params" in case.args else ["--params", "params.yaml"]
    result = CliRunner().invoke(app, [*case.args, *given])
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert result.exit_code == 2, result.output
    assert len(errors) == 1 and case.message in errors[0], result.output
    assert len(errors[0]) < 400, errors[0]  # a line, not a dump
    if earlier.suffix:
        assert earlier.read_bytes() == EARLIER
        if case.args is EXPORT:
            assert not (tmp_path / "shipped.pt").exists()  # nothing shipped either
    else:
        assert not any(earlier.glob("*.pt"))
    assert not (tmp_path / "PWNED").exists()
    assert not list(tmp_path.rglob(".*.tmp"))  # no half-written file left behind


# --- classes that are not one refused command line: tolerated input, the environment, usage --


def _run(args: list[str], cwd: Path, **kwargs: object) -> subprocess.CompletedProcess:
    """The installed `sokd` command itself (its own process: usage errors, limits, signals)."""
    command = [sys.executable, "-m", "stages", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, **kwargs)


def _errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error: ")]


@pytest.mark.parametrize(
    "args",
    [["export", "--bogus"], ["export"], ["verify", "--checkpoint", "x.pt"], ["distil"]],
    ids=["unknown option", "missing options", "verify without --artifact", "unknown command"],
)
def test_usage_errors_are_one_error_line_and_exit_2(args: list[str], tmp_path: Path) -> None:
    result = _run(args, tmp_path)
    assert result.returncode == 2, result.stderr
    assert len(_errors(result.stderr)) == 1 and "--help" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1  # no box around it


def test_params_that_are_not_utf8_name_the_byte_and_line(tmp_path: Path) -> None:
    text = TINY_PARAMS.read_text().replace("seed: 0", "seed: 0  # caf\xe9", 1)
    (tmp_path / "params.yaml").write_bytes(text.encode("latin-1"))
    result = CliRunner().invoke(app, [*PREPARE, "--params", str(tmp_path / "params.yaml")])
    assert result.exit_code == 2
    line = text[: text.index("\xe9")].count("\n") + 1
    assert f"byte 0xe9 at line {line} is not UTF-8; save the file as UTF-8" in result.output


def _prepare(kit: Kit, folder: Path, storage: str) -> Prepared:
    kit.set("prepare.storage", storage)
    (folder / "params.yaml").write_text(yaml.safe_dump(kit.params))
    result = _run([*PREPARE, "--params", "params.yaml"], folder)
    assert result.returncode == 0, result.stderr
    return load_prepared(folder / "data.pt", ("train", "val"))


@pytest.mark.parametrize("storage", ["memory", "files"])
def test_a_link_loop_and_macos_metadata_files_are_skipped_and_said(
    storage: str, tmp_path: Path
) -> None:
    kit = Kit(tmp_path, yaml.safe_load(TINY_PARAMS.read_text()), tmp_path)
    raw = kit.folders()
    (raw / "train" / "a" / "loop").symlink_to(".")  # `ln -s . train/a/loop`
    (raw / "train" / "b" / "._0.png").write_bytes(b"\0\5\26\7" + b"\0" * 60)  # AppleDouble
    data = _prepare(kit, tmp_path, storage)
    assert sum(len(data.splits[s].labels) for s in ("train", "val")) == 8  # 8 files, each once
    result = _run([*PREPARE, "--params", "params.yaml"], tmp_path)
    assert "skipped 1 repeated link(s)" in result.stderr
    assert "skipped 1 macOS ._ metadata file(s)" in result.stderr


def test_16_bit_greyscale_is_scaled_to_8_bits_not_clipped(tmp_path: Path) -> None:
    kit = Kit(tmp_path, yaml.safe_load(TINY_PARAMS.read_text()), tmp_path)
    raw = kit.folders()
    ramp = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    for k, path in enumerate(sorted((raw / "train").rglob("*.png"))):
        Image.fromarray(np.roll(ramp, k)).save(path)  # mode I;16
    data = _prepare(kit, tmp_path, "memory")
    pixels = torch.cat([data.splits[s].images.flatten() for s in ("train", "val")])
    assert 120 < pixels.float().mean() < 135 and (pixels == 255).float().mean() < 0.1


def test_a_stale_scratch_folder_of_a_killed_export_is_removed_a_live_one_kept(
    built: Path, tmp_path: Path
) -> None:
    kit = Kit(tmp_path, yaml.safe_load(TINY_PARAMS.read_text()), built)
    kit.set("distill.objectives", ["sokd"])
    kit.copy("teacher3.pt")
    kit.student(built / "student.pt")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(kit.params))
    # What SIGKILL leaves: the scratch folder of a process that no longer exists.
    killed = subprocess.Popen([sys.executable, "-c", "pass"])
    killed.wait()
    stale = tmp_path / f".export-{killed.pid}-x1" / "model.onnx"
    live = tmp_path / f".export-{os.getpid()}-x2"
    stale.parent.mkdir()
    stale.write_bytes(b"half an ONNX file")
    live.mkdir()
    result = _run(EXPORT, tmp_path)
    assert result.returncode == 0, result.stderr
    assert not stale.parent.exists() and live.is_dir()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_export_into_a_read_only_folder_is_one_line(built: Path, tmp_path: Path) -> None:
    kit = Kit(tmp_path, yaml.safe_load(TINY_PARAMS.read_text()), built)
    kit.set("distill.objectives", ["sokd"])
    kit.copy("teacher3.pt")
    kit.student(built / "student.pt")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(kit.params))
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    result = _run([*EXPORT[:-4], "--out", "ro/student.onnx", *EXPORT[-2:]], tmp_path)
    assert result.returncode == 2 and len(_errors(result.stderr)) == 1, result.stderr
    assert "cannot write ro" in result.stderr and "Traceback" not in result.stderr


def _small_files(limit: int) -> Callable[[], None]:
    """Run a child that may write no file past `limit` bytes: the kernel refuses the write as a
    full disk would (EFBIG instead of ENOSPC), and does so as root too."""

    def limit_writes() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an error to handle, not a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_writes


@pytest.mark.parametrize("stage", ["prepare", "export"])
def test_a_full_disk_is_one_line_and_keeps_the_earlier_output(
    stage: str, built: Path, tmp_path: Path
) -> None:
    kit = Kit(tmp_path, yaml.safe_load(TINY_PARAMS.read_text()), built)
    if stage == "prepare":
        write_fashion_mnist(tmp_path / "raw", 300, 60)
        args, output = PREPARE, tmp_path / "data.pt"
    else:
        kit.set("distill.objectives", ["sokd"])
        kit.copy("teacher3.pt")
        kit.student(built / "student.pt")
        args, output = EXPORT, tmp_path / "student.onnx"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(kit.params))
    output.write_bytes(EARLIER)
    result = _run(args, tmp_path, preexec_fn=_small_files(20_000))
    assert result.returncode == 2 and len(_errors(result.stderr)) == 1, result.stderr
    assert "Traceback" not in result.stderr and "cannot write" in result.stderr
    assert output.read_bytes() == EARLIER
    assert not list(tmp_path.glob(".*.tmp")) and not list(tmp_path.glob(".export-*"))


def _tampered(built: Path, tmp_path: Path, key: str, value: str) -> Path:
    import onnx

    proto = onnx.load(str(built / "student.onnx"))
    for entry in proto.metadata_props:
        if entry.key == key:
            entry.value = value
    path = tmp_path / "tampered.onnx"
    onnx.save(proto, str(path))
    return path


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("input_spec", "{not json", "metadata 'input_spec' is not the JSON dict"),
        ("classes", '"abc"', "metadata 'classes' is not the JSON list"),
        ("input_spec", '{"mean": [0.5], "std": [0.5], "size": [32, 32]}', "does not match"),
    ],
    ids=["input_spec not JSON", "classes a string", "input_spec of another size"],
)
def test_load_student_refuses_tampered_metadata_in_one_line(
    key: str, value: str, message: str, built: Path, tmp_path: Path
) -> None:
    from pipeline.core.errors import PipelineError
    from pipeline.shipping.deploy import load_student

    with pytest.raises(PipelineError, match=message) as caught:
        load_student(_tampered(built, tmp_path, key, value))
    assert "\n" not in str(caught.value)


# --- INT8 that cannot hold its gate: declined by default, required on request (issue 31) --------


def _declining(kit: Kit, required: bool) -> None:
    """A gate no INT8 file of this student meets: every prediction equal to fp32's, no fp32
    layer allowed to help."""
    kit.copy(*ARTIFACTS)
    kit.set("quantize.max_fp32_layers", 0)
    kit.set("quantize.fp32_stem", False)
    kit.set("quantize.fp32_head", False)
    kit.set("quantize.per_channel", False)  # coarse weight scales and activation ranges from
    kit.set("quantize.calibration_images", 1)  # one image: INT8 flips predictions
    kit.set("verify.int8", {"min_agreement": 1.0, "max_top1_drop": 0.0, "required": required})
    (kit.folder / "params.yaml").write_text(yaml.safe_dump(kit.params))


def test_int8_that_misses_its_gate_is_declined_and_the_run_ships_fp32(
    built: Path, tmp_path: Path
) -> None:
    kit = Kit(tmp_path, yaml.safe_load(TINY_PARAMS.read_text()), built)
    _declining(kit, required=False)
    result = _run([*QUANTIZE[:-4], "--out", "int8", *QUANTIZE[-2:]], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "warning: INT8 declined" in result.stderr and "max_fp32_layers 0" in result.stderr
    assert sorted(p.name for p in (tmp_path / "int8").iterdir()) == ["refused.json"]
    metrics = json.loads((tmp_path / "q.json").read_text())
    assert metrics["int8/accepted"] is False and metrics["int8/val_agreement"] < 1.0
    assert metrics["int8/fp32_layer_count"] == 0 and "misses the gate" in metrics["int8/refusal"]
    result = _run([*VERIFY[:3], "--artifact", "int8", *VERIFY[5:]], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "warning: int8 declined, not shipped" in result.stderr
    card = (tmp_path / "card.md").read_text()
    assert "ONNX INT8 (onnxruntime): declined, not shipped.** INT8 misses the gate" in card
    assert "verify.int8.required: true" in card
    verified = json.loads((tmp_path / "v.json").read_text())
    assert verified["gate/passed"] and verified["int8/accepted"] is False
    assert "onnx/top1" in verified and "int8/top1" not in verified


def test_int8_required_fails_quantize_in_one_line_and_keeps_the_earlier_file(
    built: Path, tmp_path: Path
) -> None:
    kit = Kit(tmp_path, yaml.safe_load(TINY_PARAMS.read_text()), built)
    _declining(kit, required=True)
    (tmp_path / "int8").mkdir()
    (tmp_path / "int8" / "student.int8.onnx").write_bytes(EARLIER)
    result = _run([*QUANTIZE[:-4], "--out", "int8", *QUANTIZE[-2:]], tmp_path)
    assert result.returncode == 1, result.stderr
    assert len(_errors(result.stderr)) == 1 and "INT8 misses the gate" in result.stderr
    assert (tmp_path / "int8" / "student.int8.onnx").read_bytes() == EARLIER
    assert sorted(p.name for p in (tmp_path / "int8").iterdir()) == ["student.int8.onnx"]
    assert not list(tmp_path.glob(".int8-*")) and not (tmp_path / "q.json").exists()
