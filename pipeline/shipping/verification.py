"""The CI gate: every shipped file (each target's) under onnxruntime vs torch, on the test set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core.config import VerifyConfig
from pipeline.core.errors import ModelFileError
from pipeline.core.runtime import Runtime
from pipeline.data.batches import make_batches
from pipeline.data.datasets import Prepared
from pipeline.models.checkpoint import Checkpoint
from pipeline.shipping import gate
from pipeline.shipping.engines import Engine, from_uint8, open_engine, to_uint8
from pipeline.shipping.targets import REFUSAL_FILE, Target, target_of

CPU = Runtime(torch.device("cpu"), amp_dtype=None, channels_last=False)


def shipped_files(artifacts: list[Path]) -> tuple[list[Path], dict[str, str]]:
    """The files to verify, and the targets declined with their reasons. An artifact that is a
    folder (quantize's output) holds its ONNX file, or a refusal saying why there is none."""
    from pipeline.core.files import read_json

    files, declined = [], {}
    for path in artifacts:
        if not path.is_dir():
            files.append(path)
            continue
        inside = sorted(path.glob("*.onnx"))
        if inside:
            files += inside
        elif (path / REFUSAL_FILE).is_file():
            refusal = read_json(path / REFUSAL_FILE, ModelFileError, "refusal", "rerun quantize")
            declined[str(refusal.get("target", "int8"))] = str(refusal.get("int8/refusal", "?"))
        else:
            raise ModelFileError(
                f"{path} holds no ONNX file and no {REFUSAL_FILE}; rerun `dvc repro quantize`"
            )
    return files, declined


def open_targets(
    artifacts: list[Path], ckpt: Checkpoint, threads: int
) -> dict[str, tuple[Target, Engine]]:
    """Each file's target and engine, by target name, after checking it reads the checkpoint's
    input and was made from this checkpoint (and from the listed file of its source target)."""
    opened: dict[str, tuple[Target, Engine]] = {}
    for path in artifacts:
        engine = open_engine(path, threads)
        target = target_of(path, engine.metadata)
        if target.name in opened:
            raise ModelFileError(f"{path} and {opened[target.name][1].path} are both {target.name}")
        engine.check_signature((ckpt.in_channels, *ckpt.image_size))
        opened[target.name] = (target, engine)
    for target, engine in opened.values():
        sources = {"checkpoint_sha256": ckpt.path}
        if target.source != "checkpoint":
            if target.source not in opened:
                raise ModelFileError(
                    f"{engine.path} is built from the {target.source} target's file; list that "
                    f"file too (another --artifact)"
                )
            sources[f"source_{target.source}_sha256"] = opened[target.source][1].path
        engine.check_provenance(sources)
    return opened


def _file_figures(name: str, target: Target, engine: Engine, sizes: dict[str, int]) -> dict:
    meta = engine.metadata
    figures: dict[str, Any] = {
        f"{name}/file_bytes": sizes[name],
        f"{name}/how": meta.get("how") or meta.get("quantization") or "not recorded",
    }
    if target.source in sizes:  # how much smaller than the file it was built from
        figures[f"{name}/size_ratio"] = sizes[target.source] / sizes[name]
    return figures


def _logits(
    model: torch.nn.Module, batches: Any, engines: dict[str, Engine], spec: Any
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """torch's logits and each file's, batch by batch. When a file reads uint8 images at the
    network's size, every engine and torch read the same 8-bit images (resampled pixels rounded
    as a decoder's are), so the gate compares the networks, not two inputs. A file that resizes
    and crops itself reads the stored images, and torch the evaluation path's float crops: its
    logits then also hold the in-graph geometry to the gate's tolerance."""
    at_size = {name: e for name, e in engines.items() if not e.resizes}
    raw = any(engine.takes_uint8 for engine in at_size.values())
    torch_logits, file_logits = [], {name: [] for name in at_size}
    with torch.inference_mode():
        for images, _ in batches:
            x = pixels = images.numpy()
            if raw:
                pixels = to_uint8(x, spec.mean, spec.std)
                x = from_uint8(pixels, spec.mean, spec.std)
            torch_logits.append(model(torch.from_numpy(x)).numpy())
            for name, e in at_size.items():
                file_logits[name].append(e.run(pixels) if e.takes_uint8 else e.logits(x))
    files = {n: np.concatenate(v) for n, v in file_logits.items()}
    files |= {name: e.batch_logits(batches) for name, e in engines.items() if e.resizes}
    return np.concatenate(torch_logits), {name: files[name] for name in engines}


def verify(
    ckpt: Checkpoint, artifacts: list[Path], data: Prepared, cfg: VerifyConfig
) -> tuple[dict[str, Any], dict[str, Engine]]:
    """Compare every file in `artifacts` with torch fp32 on the test split, each against its
    target's gate (`verify.<target>`) and `verify.min_top1`.

    Returns the metrics (with `gate/passed` and `gate/failures`) and the engines by target name.
    """
    if data.image_shape[0] != ckpt.in_channels:
        raise ModelFileError(
            f"{ckpt.path} reads {ckpt.in_channels}-channel images, the data has "
            f"{data.image_shape[0]}; verify a student trained on this data"
        )
    opened = open_targets(artifacts, ckpt, cfg.threads)
    model = ckpt.build().float().cpu()
    batches = make_batches(data, "test", cfg.batch_size, None, CPU, 0, ckpt.spec)
    t, files = _logits(model, batches, {name: e for name, (_, e) in opened.items()}, ckpt.spec)
    labels = batches.labels.numpy()
    hits = t.argmax(1) == labels
    report: dict[str, Any] = {
        "test/images": len(labels),
        "torch/top1": float(hits.mean()),
        # the card's limitations: where the student is weakest, class by class
        "torch/per_class_top1": [
            float(hits[labels == c].mean()) if (labels == c).any() else None
            for c in range(len(ckpt.classes))
        ],
    }
    sizes = {name: engine.path.stat().st_size for name, (_, engine) in opened.items()}
    failures = []
    for name, (target, engine) in opened.items():
        measured = gate.figures(name, t, files[name], labels)
        report |= measured | _file_figures(name, target, engine, sizes)
        failures += gate.file_failures(name, measured, cfg)
    report.update({"gate/passed": not failures, "gate/failures": "; ".join(failures)})
    return report, {name: engine for name, (_, engine) in opened.items()}


def summary(report: dict[str, Any], names: list[str]) -> str:
    """Top-1 of torch and of each file, with each file's agreement, in one line."""
    files = ", ".join(
        f"{name} {100 * report[f'{name}/top1']:.2f}% (agreement {report[f'{name}/agreement']:.4f})"
        for name in names
    )
    return f"top-1 torch {100 * report['torch/top1']:.2f}%, {files}"
