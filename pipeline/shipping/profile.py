"""The candidate students' cost before any training: each built for the data, exported, quantized
and timed as the file it would ship as.

Weights change neither a file's speed nor its size, so untrained networks serve. Each candidate
becomes its fp32 ONNX file and its plain static INT8 file (stem and classifier fp32, calibrated on
training images, no accuracy control: what `quantize` starts from). Every file is timed at batch
1 on onnxruntime's CPU provider with `budget.threads` threads and no spinning, after a warm-up,
the files taking turns within each round (`timing.latencies`, the protocol `verify` holds the
shipped file to, torch-free so that it also runs on the deployment machine). A candidate is
within budget when its INT8 file's p90, size and MACs meet `budget`'s limits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.core.config import BudgetConfig, ExportConfig, QuantizeConfig
from pipeline.core.errors import GateError
from pipeline.core.runtime import machine
from pipeline.data.datasets import Prepared
from pipeline.models import create_model
from pipeline.models.checkpoint import load_checkpoint, save_checkpoint
from pipeline.models.staged import count_macs, count_parameters
from pipeline.shipping.int8 import plain_int8
from pipeline.shipping.onnx import export_onnx
from pipeline.shipping.timing import CALLS, MANIFEST, ROUNDS, latencies


def candidate_files(
    arch: str,
    data: Prepared,
    cfg: QuantizeConfig,
    seed: int,
    work: Path,
    export_cfg: ExportConfig | None = None,
) -> dict[str, Any]:
    """`arch` built for the data's classes and input, untrained: its fp32 and INT8 files (made as
    `export_cfg` says the shipped ones are: their input kind, opset, exporter), MACs and
    parameters."""
    folder = work / arch.replace(":", "_").replace("/", "_")
    folder.mkdir(parents=True)
    model = create_model(arch, data.num_classes, data.image_shape[0]).eval()
    spec = data.input_spec()
    shape = (data.image_shape[0], *spec.size)
    save_checkpoint(
        folder / "untrained.pt", model, arch=arch, role="student", data=data, params={}, metrics={}
    )
    fp32 = folder / "student.onnx"
    export_onnx(load_checkpoint(folder / "untrained.pt"), fp32, export_cfg or ExportConfig())
    int8 = plain_int8(fp32, folder, data, cfg, seed)
    return {
        "fp32": fp32,
        "int8": int8,
        "macs": count_macs(model, shape),
        "params": count_parameters(model),
        "shape": shape,
    }


def measured_elsewhere(path: str, names: list[str]) -> dict[str, tuple[float, float]]:
    """p50 and p90 per file name from a latencies.json written on the deployment machine."""
    from pipeline.core.errors import ConfigError

    source = Path(path)
    try:
        figures = json.loads(source.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(
            f"budget.latencies_from: {source} is not a latencies.json ({err}); write it with "
            f"`python DIR/time_candidates.py DIR` on the deployment machine"
        ) from None
    if missing := [n for n in names if n not in figures]:
        raise ConfigError(
            f"budget.latencies_from: {source} has no figures for {', '.join(missing)}; export "
            "the candidates again (`sokd profile --export DIR`) and time them there"
        )
    return {n: (figures[n]["p50_ms"], figures[n]["p90_ms"]) for n in names}


def export_candidates(built: dict[str, dict[str, Any]], threads: int, folder: Path) -> None:
    """The candidates' files, a manifest and the timing script, for another machine."""
    import shutil

    from pipeline.shipping import timing

    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for arch, b in built.items():
        for kind in ("fp32", "int8"):
            name = f"{arch.replace(':', '_')}.{kind}.onnx"
            shutil.copyfile(b[kind], folder / name)
            files[f"{arch}|{kind}"] = name
    shape = list(next(iter(built.values()))["shape"])
    manifest = {"threads": threads, "shape": shape, "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.copyfile(timing.__file__, folder / "time_candidates.py")


def profile_candidates(
    archs: tuple[str, ...],
    data: Prepared,
    budget: BudgetConfig,
    cfg: QuantizeConfig,
    seed: int,
    work: Path,
    export: Path | None = None,
    export_cfg: ExportConfig | None = None,
) -> dict[str, Any]:
    """Per candidate `<arch>/...` figures and `within_budget`; the timing protocol beside them.
    `export`: also write the files and the timing script there (for the deployment machine)."""
    built = {arch: candidate_files(arch, data, cfg, seed, work, export_cfg) for arch in archs}
    files = {f"{a}|{f}": b[f] for a, b in built.items() for f in ("fp32", "int8")}
    if export is not None:
        export_candidates(built, budget.threads, export)
    if budget.latencies_from:
        times = measured_elsewhere(budget.latencies_from, list(files))
    else:
        times = latencies(files, budget.threads)
    report: dict[str, Any] = {
        "profile/calls_per_file": CALLS,
        "profile/rounds": ROUNDS,
        "profile/threads": budget.threads,
        "profile/latencies_from": budget.latencies_from or "measured here",
        "profile/machine": machine(),
    }
    for arch, b in built.items():
        fp32_p50, fp32_p90 = times[f"{arch}|fp32"]
        int8_p50, int8_p90 = times[f"{arch}|int8"]
        size = b["int8"].stat().st_size
        misses = budget.misses(int8_p90, size, b["macs"])
        report |= {
            f"{arch}/fp32_p50_ms": fp32_p50,
            f"{arch}/fp32_p90_ms": fp32_p90,
            f"{arch}/int8_p50_ms": int8_p50,
            f"{arch}/int8_p90_ms": int8_p90,
            f"{arch}/fp32_bytes": b["fp32"].stat().st_size,
            f"{arch}/bytes": size,
            f"{arch}/macs": b["macs"],
            f"{arch}/params": b["params"],
            f"{arch}/within_budget": not misses,
            f"{arch}/over_budget": "; ".join(misses),
        }
    return report


def check_some_within(archs: tuple[str, ...], report: dict[str, Any]) -> None:
    """Fail in one line (a GateError, exit 1) when no candidate is within budget: the fastest
    candidate, what it misses, and what to change."""
    if any(report[f"{a}/within_budget"] for a in archs):
        return
    fastest = min(archs, key=lambda a: report[f"{a}/int8_p90_ms"])
    raise GateError(
        f"no candidate student is within budget (before any training); the fastest, {fastest}: "
        f"{report[f'{fastest}/over_budget']}; relax those budget limits or add a smaller "
        "architecture to distill.candidates (metrics/profile.json lists every candidate)"
    )


# verify's allowance on the latency limit. The budget protocol's p90 of one file, measured 30
# times while training and the test suite shared the 2-core machine, ranged 0.90-1.32x its median
# (benchmarks/budget_noise.json): at 1.15x the limit, a file truly at 0.8x the budget would need a
# measurement 1.44x high to fail, one at 1.3x a measurement 0.88x low to pass; neither was seen.
# `export` chooses with no allowance (tolerance 1): a file it ships measured at most the limit, so
# verify's second measurement of it fails only when it reads 1.15x the first. Were both allowed
# 1.15x, a file export read at 1.1x the limit would ship and fail verify on a reading 5 % higher.
LATENCY_TOLERANCE = 1.15


def _p90_here(file: Path, budget: BudgetConfig, tolerance: float) -> tuple[float, int]:
    """The file's p90 on this machine and how many readings it took: a reading over the limit
    is taken again and the lower kept, because this 2-core machine has had slow spells in which
    one file read 2.5x its usual figure (1.15 against 0.46-0.48 ms), which no tolerance absorbs;
    a spell rarely spans two readings, while a file truly over budget misses on both."""
    _, p90 = latencies({"file": file}, budget.threads)["file"]
    if not budget.latency_ms or p90 <= budget.latency_ms * tolerance:
        return p90, 1
    return min(p90, latencies({"file": file}, budget.threads)["file"][1]), 2


def hold_budget(
    model: Any,
    arch: str,
    files: dict[str, Path],
    shape: tuple[int, ...],
    budget: BudgetConfig,
    tolerance: float = LATENCY_TOLERANCE,
) -> dict[str, Any]:
    """The shipped file (INT8 where it ships, else fp32 ONNX) against the budget, measured by
    the profile's protocol, the latency limit scaled by `tolerance`: `budget/passed` and the
    figures, `budget/failures` in words. With `budget.latencies_from`, the latency is that
    file's figure for this architecture."""
    shipped, readings = "int8" if "int8" in files else "onnx", 0
    if budget.latencies_from:
        name = f"{arch}|{'int8' if shipped == 'int8' else 'fp32'}"
        _, p90 = measured_elsewhere(budget.latencies_from, [name])[name]
    else:
        p90, readings = _p90_here(files[shipped], budget, tolerance)
    size, macs = files[shipped].stat().st_size, count_macs(model, shape)
    misses = budget.misses(p90, size, macs, tolerance)
    limits = ((p90, budget.latency_ms * tolerance), (size, budget.max_bytes),
              (macs, budget.max_macs))  # fmt: skip
    return {
        "budget/passed": not misses,
        "budget/file": shipped,
        "budget/latency_p90_ms": p90,
        "budget/bytes": size,
        "budget/macs": macs,
        "budget/latency_tolerance": tolerance,
        "budget/latencies_from": budget.latencies_from or "measured here",
        "budget/latency_readings": readings,
        "budget/failures": "; ".join(misses),
        # The worst figure / limit: how far over budget (> 1) or how much room (< 1) is left.
        "budget/excess": max((figure / limit for figure, limit in limits if limit), default=0.0),
    }


def shipped_cost(name: str, checkpoint: Path, data: Prepared, p: Any, work: Path) -> dict[str, Any]:
    """What student `name` (`checkpoint`) would ship as, made as export and quantize make it
    (INT8 under the accuracy control, else the fp32 ONNX file when INT8 is declined), held to
    `p.budget` with no latency allowance (see LATENCY_TOLERANCE: verify's is the headroom)."""
    from pipeline.shipping.int8 import Int8GateError, quantize_int8

    ckpt = load_checkpoint(checkpoint)
    folder = work / name.replace("/", "_").replace(":", "_")
    folder.mkdir(parents=True)
    files = {"onnx": folder / "student.onnx"}
    export_onnx(ckpt, files["onnx"], p.export)
    try:
        quantize_int8(files["onnx"], folder / "int8.onnx", data, p.quantize, p.verify.int8, p.seed)
        files["int8"] = folder / "int8.onnx"
    except Int8GateError as refused:
        if p.verify.int8.required:  # no file of it can ship
            return {"budget/passed": False, "budget/excess": float("inf"),
                    "budget/failures": f"INT8 is required and declined: {refused}"}  # fmt: skip
    shape = (ckpt.in_channels, *ckpt.image_size)
    return hold_budget(ckpt.build(), ckpt.arch, files, shape, p.budget, tolerance=1.0)
