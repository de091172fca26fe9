"""A Markdown model card next to the exported artifacts: what the model is and how it fares."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.errors import PipelineError
from pipeline.core.files import read_json, sha256_file
from pipeline.models.checkpoint import Checkpoint
from pipeline.shipping.latency import speed_in_words


def run_outputs(dvc_yaml: Path = Path("dvc.yaml")) -> list[str]:
    """Paths the pipeline itself writes: dvc.lock and every out, metric and plot of dvc.yaml.

    A templated path (`models/distill/${item.objective}`) stands for its folder up to the template.
    """
    paths = ["dvc.lock"]
    if not dvc_yaml.is_file():
        return paths
    for stage in (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {}).values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []) or []:
                path = str(next(iter(entry)) if isinstance(entry, dict) else entry)
                paths.append(path.split("${")[0].rstrip("/") or path)
    return paths


def _is_run_output(path: str, outputs: list[str]) -> bool:
    return any(path == out or path.startswith(f"{out}/") for out in outputs)


def git_commit() -> str:
    """The commit of the working tree, `-dirty` when a tracked file other than the pipeline's own
    outputs (dvc.lock, metrics, plots, the model card: rewritten by the run itself) has changed."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    outputs = run_outputs()
    changed = [line[3:].strip().strip('"') for line in status.splitlines() if line.strip()]
    dirty = [path for path in changed if not _is_run_output(path, outputs)]
    return f"{head}-dirty" if dirty else head


def library_versions() -> dict[str, str]:
    """Versions of the libraries that produced and run the artifacts, for the card and metrics."""
    import importlib.metadata

    versions = {}
    for package in ("torch", "torchvision", "onnx", "onnxruntime"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def read_metrics(path: Path, stage: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A stage's metrics JSON (records/evaluate.json, records/export.json) holding the `required`
    keys, or one clear error."""
    fix = f"run `dvc repro {stage}`"
    metrics = read_json(path, PipelineError, f"{stage} metrics", fix)
    missing = [key for key in required if key not in metrics]
    if missing:
        raise PipelineError(
            f"{stage} metrics {path} lack {', '.join(missing)}; they were written by another "
            f"run or edited: {fix}"
        )
    return metrics


def card_keys(objective: str) -> tuple[str, ...]:
    """The evaluation metrics the card of a student trained with `objective` quotes."""
    key = f"{objective}/student"
    parts = ("params", "macs", "compression", "agreement_with_teacher")
    return ("teacher/top1", *(f"{key}/{part}" for part in parts))


def _students_table(evaluation: dict[str, Any], selection: dict[str, Any]) -> str:
    """Every student the run trained (one per objective of distill.objectives): validation top-1
    (what chose the shipped one), test top-1 and agreement with the teacher, torch fp32."""
    shipped = selection.get("selection/objective")
    rows = []
    for key, value in selection.items():
        if not (key.startswith("selection/") and key.endswith("/val_top1")):
            continue
        name = key.removeprefix("selection/").removesuffix("/val_top1")
        if name == "teacher":
            continue
        test = evaluation.get(f"{name}/student/top1", float("nan"))
        agree = evaluation.get(f"{name}/student/agreement_with_teacher", float("nan"))
        mark = " **shipped**" if name == shipped else ""
        rows.append(f"| `{name}`{mark} | {_pct(value)} | {_pct(test)} | {_pct(agree)} |")
    header = (
        "| student | validation top-1 | test top-1 | agreement with the teacher |\n"
        "|---|---|---|---|\n"
    )
    same = "same schedule" if "/" in str(shipped) else "same architecture and schedule"
    notes = [n for n in str(selection.get("selection/notes", "")).split(" | ") if n]
    warnings = "".join(f"\n**Warning:** {note}.\n" for note in notes)
    return (
        f"**Why this student.** {selection.get('selection/reason', 'not recorded')}. Every "
        f"student this run trained, {same} (validation chooses; test only reports):\n\n{header}"
        + "\n".join(rows)
        + "\n"
        + warnings
    )


def _title(name: str) -> str:
    from pipeline.shipping.targets import TARGETS

    return TARGETS.get(name).title


def _latency_table(report: dict[str, Any], targets: list[str]) -> str:
    lat = "| engine | batch-1 median ms | batch-1 p95 ms | batch-64 images/s (rounds) |\n"
    lat += "|---|---|---|---|\n"
    labels = {"torch": "torch eager fp32"} | {name: _title(name) for name in targets}
    for engine, label in labels.items():
        rate = f"throughput/{engine}_b64_images_per_s"
        lat += (
            f"| {label} | {report[f'latency/{engine}_b1_median_ms']:.2f} | "
            f"{report[f'latency/{engine}_b1_p95_ms']:.2f} | {report[rate]:.0f} "
            f"({report[rate + '_low']:.0f}-{report[rate + '_high']:.0f}) |\n"
        )
    return lat


def _accuracy(
    report: dict[str, Any], evaluation: dict[str, Any], teacher: str, targets: list[str]
) -> str:
    rows = [
        f"| teacher (`{teacher}`, torch) | {_pct(evaluation['teacher/top1'])} | |",
        f"| this student, torch fp32 | {_pct(report['torch/top1'])} | |",
    ]
    rows += [
        f"| this student, {_title(name)} | {_pct(report[f'{name}/top1'])} | "
        f"{_pct(report[f'{name}/agreement'])}, max \\|Δlogit\\| "
        f"{report[f'{name}/max_abs_logit_diff']:.1e} |"
        for name in targets
    ]
    return "| | top-1 | same prediction as torch fp32 |\n|---|---|---|\n" + "\n".join(rows) + "\n"


def _size_and_speed(
    report: dict[str, Any], evaluation: dict[str, Any], key: str, targets: list[str]
) -> str:
    files = "; ".join(
        f"{_title(name)}: {report[f'{name}/how']}"
        + (
            f", {report[f'{name}/size_ratio']:.1f}x smaller than fp32"
            if f"{name}/size_ratio" in report
            else ""
        )
        for name in targets
    )
    words = "\n".join(
        speed_in_words(report, name, _title(name))
        for name in targets
        if f"speed/{name}_vs_fp32_b1" in report
    )
    params, macs = evaluation[f"{key}/params"], evaluation[f"{key}/macs"] / 1e6
    return (
        f"{params:,} parameters ({evaluation[f'{key}/compression']:.1f}x fewer than the teacher), "
        f"{macs:.1f} M multiply-accumulates per image. {files}. CPU, "
        f"{int(report['latency/threads'])} threads, the engines taking turns in "
        f"{int(report['latency/rounds'])} rounds (medians; throughput from the slowest to the "
        f"fastest round):\n\n{_latency_table(report, targets)}\n{words}\n"
    )


def _declined(declined: dict[str, str]) -> str:
    """Why a target's file does not ship, and what would change that."""
    return "".join(
        f"\n**{_title(name)}: declined, not shipped.** {reason}. The files above met their gates; "
        f"to make the run fail instead when this file cannot be built, set "
        f"`verify.{name}.required: true`.\n"
        for name, reason in declined.items()
    )


def _run_it(ckpt: Checkpoint, path: Path) -> str:
    c, h, w = ckpt.in_channels, *ckpt.image_size
    return f"""`pip install sokd-pipeline` (onnxruntime, numpy and Pillow; no torch), then

```python
import numpy as np
from pipeline.shipping.deploy import load_student

student = load_student("{path}")  # its preprocessing comes from the file's metadata
images = np.zeros((2, {c}, {h}, {w}), np.uint8)  # yours: uint8 (N, C, H, W), any H and W
for label in student.predict(images):  # class names; student.logits(images): the logits
    print(label)
```

or, for image files and folders, `sokd predict photos/ --model {path} --top-k 3 --out
predictions.csv`. Without this package: [docs/deploy.md](../docs/deploy.md) gives the file's input,
output and preprocessing for onnxruntime alone.
"""


def _metadata(ckpt: Checkpoint, report: dict[str, Any], dataset: str, targets: list[str]) -> str:
    """The model-card convention's YAML block: licence, data, metrics, tags, library."""
    objective = ckpt.params.get("objective", "?")
    results = [
        {
            "type": "accuracy",
            "name": f"test top-1, {_title(t)}",
            "value": round(report[f"{t}/top1"], 4),
        }
        for t in targets
    ]
    meta = {
        "license": "other",  # the data's terms and any pretrained weights' (see Licence)
        "library_name": "onnx",
        "pipeline_tag": "image-classification",
        "tags": ["image-classification", "knowledge-distillation", objective, ckpt.arch, *targets],
        "datasets": [dataset],
        "metrics": ["accuracy"],
        "model-index": [
            {
                "name": f"{ckpt.arch}-{objective}",
                "results": [
                    {
                        "task": {"type": "image-classification"},
                        "dataset": {"name": dataset, "type": dataset, "split": "test"},
                        "metrics": results,
                    }
                ],
            }
        ],
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n\n"


def _limitations(ckpt: Checkpoint, report: dict[str, Any], dataset: str) -> str:
    """Intended use, where the student is weakest (per-class test top-1), and the licence."""
    per_class = report.get("torch/per_class_top1") or []
    ranked = sorted(
        (
            (top1, name)
            for name, top1 in zip(ckpt.classes, per_class, strict=False)
            if top1 is not None
        )
    )
    rows = "".join(f"| {name} | {_pct(top1)} |\n" for top1, name in ranked)
    weakest = ", ".join(f"{name} ({_pct(top1)})" for top1, name in ranked[:3])
    origin = ckpt.metrics.get("weights/origin")
    start = f"from pretrained weights `{origin}`" if origin else "from random initialisation"
    licence = ckpt.metrics.get("weights/licence")
    terms = f" Its starting weights' licence: {licence}." if licence else ""
    return f"""## Intended use and limitations

Classifying {ckpt.in_channels}-channel images of the {len(ckpt.classes)} classes above, like those
of `{dataset}` it was trained and tested on. It knows nothing else: any other image still gets one
of these labels. The figures are measured on held-out images of the same source; expect less on
images that differ (camera, lighting, framing, resolution). Weakest on {weakest or "?"}.

| class (test top-1, torch fp32, weakest first) | top-1 |
|---|---|
{rows}
**Licence.** The student was trained {start} by this pipeline (objective
`{ckpt.params.get("objective", "?")}`); the weights carry the terms of `{dataset}` and of any
pretrained weights used for the teacher or the student (check each source's own licence).{terms}

"""


def _front(picture: str) -> str:
    if not picture:
        return ""
    return (
        f"\n![Validation top-1 of every trained student against its INT8 file's p90 batch-1 "
        f"latency (stage profile); the budget dashed, the shipped student starred]({picture})\n"
    )


def _budget(report: dict[str, Any]) -> str:
    """The budget's verdict on the shipped file, where a budget was set (docs/budget.md)."""
    if "budget/passed" not in report:
        return ""
    return (
        f"\n**Budget: met** by the {report['budget/file']} file: p90 batch-1 latency "
        f"{report['budget/latency_p90_ms']:.3f} ms, {report['budget/bytes']:,} bytes, "
        f"{report['budget/macs']:,} MACs per image, within params.yaml's `budget` "
        "(docs/budget.md).\n"
    )


def _input(files: dict[str, Path], c: int, h: int, w: int, mean: list, std: list) -> str:
    """What the shipped files read, from the files themselves (`export.input`)."""
    import onnxruntime as ort

    first = next((str(p) for name, p in files.items() if name != "checkpoint"), None)
    session = first and ort.InferenceSession(first, providers=["CPUExecutionProvider"])
    colour = "grey" if c == 1 else "RGB"
    if session and session.get_inputs()[0].type == "tensor(uint8)":
        if not isinstance(session.get_inputs()[0].shape[1], int):  # export.input: uint8_any_size
            return (
                f"Input `images`: uint8 (N, H, W, {c}), {colour} pixels as decoded, of any size; "
                f"the file resizes, centre-crops ({h}x{w}) and normalises them itself (mean "
                f"{mean}, std {std})."
            )
        return (
            f"Input `images`: uint8 (N, {h}, {w}, {c}), {colour} pixels as decoded; the file "
            f"normalises them itself (mean {mean}, std {std})."
        )
    return (
        f"Input `images`: float32 (N, {c}, {h}, {w}), `x = (uint8 / 255 - mean) / std` per "
        f"channel with mean {mean} and std {std}."
    )


def render(
    ckpt: Checkpoint,
    report: dict[str, Any],
    evaluation: dict[str, Any],
    selection: dict[str, Any],
    files: dict[str, Path],
    data_path: Path,
    dataset: str,
    declined: dict[str, str] | None = None,
    front: str = "",
) -> str:
    """The card's Markdown text. `files`: "checkpoint" and each verified target's file;
    `declined`: the targets that were not built, with the reason; `front`: the front's picture,
    relative to the card."""
    objective = ckpt.params.get("objective", "?")
    student = selection.get("selection/objective") or objective  # `sokd` or `sokd/<arch>`
    key, targets = f"{student}/student", [name for name in files if name != "checkpoint"]
    c, h, w = ckpt.in_channels, *ckpt.image_size
    teacher, k = ckpt.params.get("teacher_arch", "?"), len(ckpt.classes)
    mean, std = [round(m, 4) for m in ckpt.mean], [round(s, 4) for s in ckpt.std]
    versions = ", ".join(f"{k} {v}" for k, v in library_versions().items())
    hashes = "".join(
        f"| `{path}` | {path.stat().st_size:,} | `{sha256_file(path)}` |\n"
        for path in files.values()
    )
    head = _metadata(ckpt, report, dataset, targets)
    return f"""{head}# Model card: {ckpt.arch} student ({objective})

**What it is.** An image classifier for {k} classes ({", ".join(ckpt.classes)}),
compressed by knowledge distillation (objective `{objective}`) from a `{teacher}` teacher.
{_input(files, c, h, w, mean, std)} Output `logits`: (N, {k}). Any batch size.
Preprocessing, as in evaluation: {ckpt.spec.describe()}.

**Made by.** git commit `{git_commit()}`; data `{data_path}` (sha256 `{sha256_file(data_path)}`),
dataset `{dataset}`; the params below; {versions}.

## Accuracy on {report["test/images"]:,} test images

{_accuracy(report, evaluation, teacher, targets)}
{_students_table(evaluation, selection)}{_front(front)}
Agreement with the teacher's predictions: {_pct(evaluation[f"{key}/agreement_with_teacher"])}.

## Size and speed

{_size_and_speed(report, evaluation, key, targets)}{_budget(report)}
| file | bytes | sha256 |
|---|---|---|
{hashes}{_declined(declined or {})}
{_limitations(ckpt, report, dataset)}## Run it

{_run_it(ckpt, files[targets[-1]])}
## Params that made it

```yaml
{yaml.safe_dump(ckpt.params, sort_keys=False).strip()}
```
"""
