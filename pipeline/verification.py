"""The CI gate: the exported ONNX file under onnxruntime vs torch, on the whole test set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.batches import make_batches
from pipeline.checkpoint import Checkpoint
from pipeline.config import VerifyConfig
from pipeline.data import Prepared
from pipeline.errors import ModelFileError
from pipeline.export import INPUT_NAME
from pipeline.files import sha256_file
from pipeline.runtime import Runtime


def open_session(path: Path, threads: int, spinning: bool = True) -> Any:
    """An onnxruntime CPU session for `path`; a damaged or truncated file fails in one line.

    `spinning=False` lets idle pool threads sleep at once: when two sessions take turns on a
    small CPU, the idle one's spinning threads otherwise steal the cores from the busy one.
    """
    import onnx
    import onnxruntime as ort

    if not path.is_file():
        raise ModelFileError(f"ONNX file not found: {path}; run `dvc repro export`")
    try:
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    # Protobuf, checker and runtime errors all mean the same thing: this file is unusable.
    except Exception as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise ModelFileError(
            f"ONNX file {path} is damaged or invalid ({reason}); rerun `dvc repro export`"
        ) from None


def _metadata(session: Any) -> dict[str, str]:
    return dict(session.get_modelmeta().custom_metadata_map)


def check_signature(session: Any, path: Path, expected_shape: tuple[int, int, int]) -> None:
    """Fail unless the ONNX input is `images` with the checkpoint's (C, H, W), free batch axis."""
    inputs = session.get_inputs()
    expected = list(expected_shape)
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        raise ModelFileError(
            f"{path} takes inputs {[i.name for i in inputs]}, expected one named {INPUT_NAME!r}"
        )
    shape = inputs[0].shape
    if len(shape) != 4 or list(shape[1:]) != expected or isinstance(shape[0], int):
        raise ModelFileError(
            f"{path} expects input shape {shape}, the checkpoint reads "
            f"[batch, {', '.join(map(str, expected))}]; "
            f"export again from this checkpoint"
        )


def check_provenance(session: Any, path: Path, expected: dict[str, Path]) -> None:
    """Fail unless the file's recorded SHA-256 of each source (metadata key -> file) matches."""
    recorded = _metadata(session)
    for key, source in expected.items():
        actual = sha256_file(source)
        if recorded.get(key) != actual:
            raise ModelFileError(
                f"{path} was produced from a different {source.name} than {source} "
                f"({key} {str(recorded.get(key))[:12]} != {actual[:12]}); rerun `dvc repro`"
            )


def session_logits(session: Any, batches: Any) -> np.ndarray:
    """The logits an onnxruntime session gives for every batch of images, in order."""
    return np.concatenate([session.run(None, {INPUT_NAME: x.numpy()})[0] for x, _ in batches])


def verify(
    onnx_path: Path, int8_path: Path, ckpt: Checkpoint, data: Prepared, cfg: VerifyConfig
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Compare onnxruntime (fp32 and INT8) with torch on the test split.

    Returns the metrics (with `gate/passed` and `gate/failures`) and the two sessions,
    {"onnx", "int8"}, for callers that go on to time them.
    """
    fp32 = open_session(onnx_path, cfg.threads)
    int8 = open_session(int8_path, cfg.threads)
    for session, path in ((fp32, onnx_path), (int8, int8_path)):
        check_signature(session, path, (ckpt.in_channels, *ckpt.image_size))
    if data.image_shape[0] != ckpt.in_channels:
        raise ModelFileError(
            f"{ckpt.path} reads {ckpt.in_channels}-channel images, the data has "
            f"{data.image_shape[0]}; verify a student trained on this data"
        )
    check_provenance(fp32, onnx_path, {"checkpoint_sha256": ckpt.path})
    check_provenance(
        int8, int8_path, {"checkpoint_sha256": ckpt.path, "source_onnx_sha256": onnx_path}
    )
    model = ckpt.build().float().cpu()
    cpu = Runtime(torch.device("cpu"), amp_dtype=None, channels_last=False)
    batches = make_batches(data, "test", cfg.batch_size, None, cpu, 0, ckpt.spec)
    with torch.inference_mode():
        t = np.concatenate([model(images).numpy() for images, _ in batches])
    o, q = session_logits(fp32, batches), session_logits(int8, batches)
    labels = batches.labels.numpy()
    top1 = {
        name: float((x.argmax(1) == labels).mean())
        for name, x in (("torch", t), ("onnx", o), ("int8", q))
    }
    report: dict[str, Any] = {
        "test/images": len(labels),
        "torch/top1": top1["torch"],
        "onnx/top1": top1["onnx"],
        "onnx/agreement": float((t.argmax(1) == o.argmax(1)).mean()),
        "onnx/max_abs_logit_diff": float(np.abs(t - o).max()),
        "int8/top1": top1["int8"],
        "int8/top1_drop": top1["torch"] - top1["int8"],
        "int8/agreement": float((t.argmax(1) == q.argmax(1)).mean()),
        "onnx/file_bytes": onnx_path.stat().st_size,
        "int8/file_bytes": int8_path.stat().st_size,
        "int8/size_ratio": onnx_path.stat().st_size / int8_path.stat().st_size,
        "int8/quantization": _metadata(int8).get("quantization", "how: not recorded"),
    }
    checks = [
        (
            report["onnx/top1"] >= cfg.min_top1,
            f"ONNX top-1 {report['onnx/top1']:.4f} < min_top1 {cfg.min_top1}",
        ),
        (
            report["torch/top1"] - report["onnx/top1"] <= cfg.max_top1_drop,
            f"ONNX top-1 is {report['torch/top1'] - report['onnx/top1']:.4f} below torch "
            f"(max_top1_drop {cfg.max_top1_drop})",
        ),
        (
            report["onnx/agreement"] >= cfg.min_agreement,
            f"agreement {report['onnx/agreement']:.4f} < min_agreement {cfg.min_agreement}",
        ),
        (
            report["onnx/max_abs_logit_diff"] <= cfg.max_abs_logit_diff,
            f"max |Δlogit| {report['onnx/max_abs_logit_diff']:.2e} > max_abs_logit_diff "
            f"{cfg.max_abs_logit_diff:.0e}",
        ),
    ]
    failures = [message for ok, message in checks if not ok]
    failures += cfg.int8.failures(report["int8/top1_drop"], report["int8/agreement"], "test")
    report.update({"gate/passed": not failures, "gate/failures": "; ".join(failures)})
    return report, {"onnx": fp32, "int8": int8}
