"""CPU latency and throughput of the deployable artifacts: torch eager and every target's file.

One pass per engine is not a measurement on a shared machine: load drifts by tens of percent from
second to second, and whichever engine runs during a slow second looks slow (the quickstart's card
once showed INT8 slower than fp32 where the side-by-side benchmark measured it 1.3-1.5x faster).
So the engines take turns within each of several rounds, every figure is a median over rounds
with its spread (lowest to highest round), and the INT8/fp32 ratio is taken within each round,
where drift hits both alike. onnxruntime sessions run without spinning threads, so the engine
that waits does not steal the cores from the one being timed.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.shipping.engines import engine_calls, open_engine
from pipeline.shipping.timing import side_by_side

THROUGHPUT_BATCH = 64
FP32 = "onnx"  # the target every other file's speed is compared with
ROUNDS = 7  # alternating rounds; medians and ratios over these


def round_ratios(times: dict[str, list[list[float]]], slower: str, faster: str) -> list[float]:
    """Per round of `side_by_side`, `slower`'s median call time over `faster`'s: how many times
    faster `faster` ran in that round, where the machine's drift hit both alike."""
    return [
        statistics.median(s) / statistics.median(f)
        for s, f in zip(times[slower], times[faster], strict=True)
    ]


def _file_calls(
    files: dict[str, Path], threads: int, x: np.ndarray
) -> dict[str, Callable[[], object]]:
    """One call per ONNX file running the batch `x`, its session without spinning threads (so
    the one waiting its turn leaves the cores to the one being timed)."""
    engines = {name: open_engine(path, threads, spinning=False) for name, path in files.items()}
    return engine_calls(engines, x)


def timed_files(
    files: dict[str, Path], threads: int, x: np.ndarray, rounds: int, repeats: int
) -> dict[str, list[list[float]]]:
    """`side_by_side` of ONNX files on the batch `x`."""
    return side_by_side(_file_calls(files, threads, x), rounds, repeats)


def _engines(
    model: nn.Module, files: dict[str, Path], threads: int, x: np.ndarray
) -> dict[str, Callable[[], object]]:
    model = model.eval()
    tensor = torch.from_numpy(x)

    def torch_call() -> object:
        with torch.inference_mode():
            return model(tensor)

    return {"torch": torch_call, **_file_calls(files, threads, x)}


def _spread(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def measure(
    model: nn.Module,
    files: dict[str, Path],
    image_shape: tuple[int, int, int],
    threads: int,
    runs: int,
) -> dict[str, Any]:
    """Batch-1 latency and batch-64 throughput of torch and each ONNX file, in ROUNDS rounds.

    `files`: target name -> file ({"onnx": fp32, "int8": INT8}); each file other than the fp32
    one also gets its speed relative to fp32, per round. `threads` intra-op threads for every engine
    (0: each library's default); `runs` batch-1 calls per engine in all. Inputs are random: the
    cost of these networks does not depend on pixel values.
    """
    rng = np.random.default_rng(0)
    one = rng.standard_normal((1, *image_shape), dtype=np.float32)
    many = rng.standard_normal((THROUGHPUT_BATCH, *image_shape), dtype=np.float32)
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    report: dict[str, Any] = {"latency/threads": threads or previous, "latency/rounds": ROUNDS}
    try:
        single = side_by_side(_engines(model, files, threads, one), ROUNDS, max(1, runs // ROUNDS))
        batched = side_by_side(_engines(model, files, threads, many), ROUNDS, 3)
    finally:
        torch.set_num_threads(previous)
    for name in single:
        every = [t for round_ in single[name] for t in round_]
        rates = [THROUGHPUT_BATCH / statistics.median(r) for r in batched[name]]
        median, low, high = _spread(rates)
        report |= {
            f"latency/{name}_b1_median_ms": 1000 * statistics.median(every),
            f"latency/{name}_b1_p95_ms": 1000 * float(np.percentile(every, 95)),
            f"throughput/{name}_b64_images_per_s": median,
            f"throughput/{name}_b64_images_per_s_low": low,
            f"throughput/{name}_b64_images_per_s_high": high,
        }
    for name in [n for n in files if n != FP32 and FP32 in files]:  # each file against fp32
        for batch, times in (("b1", single), (f"b{THROUGHPUT_BATCH}", batched)):
            median, low, high = _spread(round_ratios(times, FP32, name))
            report |= {
                f"speed/{name}_vs_fp32_{batch}": median,
                f"speed/{name}_vs_fp32_{batch}_low": low,
                f"speed/{name}_vs_fp32_{batch}_high": high,
            }
    return report


def speed_in_words(report: dict[str, Any], name: str = "int8", title: str = "INT8") -> str:
    """One sentence on target `name` against ONNX fp32 on this machine, from `measure`'s ratios."""
    key = f"speed/{name}_vs_fp32"
    ratio, low, high = (report[f"{key}_b64{k}"] for k in ("", "_low", "_high"))
    one = report[f"{key}_b1"]
    figures = (
        f"batch 64: {ratio:.2f}x fp32's speed (rounds {low:.2f}-{high:.2f}), batch 1: {one:.2f}x"
    )
    if high < 1:
        return (
            f"**{title} is slower than fp32 on the machine that built this card** ({figures}): "
            f"take the fp32 file for speed here; {title} still saves memory and may be faster on "
            "CPUs with VNNI/AMX integer instructions."
        )
    if low <= 1:
        return (
            f"**{title} is not reliably faster than fp32 on the machine that built this card** "
            f"({figures}): the rounds straddle 1x; {title} saves memory, not time, here."
        )
    return f"{title} is faster than fp32 on the machine that built this card ({figures})."
