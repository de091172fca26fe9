"""CPU latency and throughput of the deployable artifacts: torch eager, ONNX fp32, ONNX INT8."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.export import INPUT_NAME

THROUGHPUT_BATCH = 64


def _timings(call: Callable[[], object], runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def measure(
    model: nn.Module,
    sessions: dict[str, Any],
    image_shape: tuple[int, int, int],
    threads: int,
    runs: int,
) -> dict[str, float]:
    """Batch-1 latency (median, p95, ms) and batch-64 throughput (images/s) of each engine.

    `threads` intra-op threads for every engine (0: each library's default). Inputs are random:
    the cost of these networks does not depend on pixel values.
    """
    rng = np.random.default_rng(0)
    one = rng.standard_normal((1, *image_shape), dtype=np.float32)
    many = rng.standard_normal((THROUGHPUT_BATCH, *image_shape), dtype=np.float32)
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    engines: dict[str, Callable[[np.ndarray], object]] = {}
    model = model.eval()

    def torch_call(x: np.ndarray) -> object:
        with torch.inference_mode():
            return model(torch.from_numpy(x))

    engines["torch"] = torch_call
    for name, session in sessions.items():
        engines[name] = lambda x, s=session: s.run(None, {INPUT_NAME: x})
    report: dict[str, float] = {"latency/threads": threads or previous}
    try:
        for name, call in engines.items():
            single = _timings(lambda c=call: c(one), runs, warmup=10)
            batched = _timings(lambda c=call: c(many), max(5, runs // 20), warmup=2)
            report[f"latency/{name}_b1_median_ms"] = 1000 * statistics.median(single)
            report[f"latency/{name}_b1_p95_ms"] = 1000 * float(np.percentile(single, 95))
            report[f"throughput/{name}_b{THROUGHPUT_BATCH}_images_per_s"] = (
                THROUGHPUT_BATCH / statistics.median(batched)
            )
    finally:
        torch.set_num_threads(previous)
    return report
