"""Speed of the deployable files: onnxruntime fp32 against INT8, side by side in one run.

    python -m benchmarks.int8_speed [--fp32 models/student.onnx] [--int8 models/student.int8.onnx]
                                    [--threads 1 2] [--rounds 30] [--out benchmarks/int8_speed.json]

For each thread count and batch size (1 and 64), the two sessions are timed in alternating rounds
(fp32, then INT8, then fp32, ...) and the medians over rounds are compared, so slow drift of a
shared machine hits both alike. Inputs are random: the cost does not depend on pixel values.
Run it after `make repro`, which writes both files.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from pipeline.export import INPUT_NAME
from pipeline.files import write_json
from pipeline.verification import open_session

BATCHES = (1, 64)


def _input_shape(session: ort.InferenceSession) -> tuple[int, int, int]:
    _, c, h, w = session.get_inputs()[0].shape
    return int(c), int(h), int(w)


def side_by_side(
    sessions: dict[str, ort.InferenceSession], batch: int, rounds: int
) -> dict[str, float]:
    """Median seconds per call of each session, timed in alternating rounds."""
    shape = _input_shape(next(iter(sessions.values())))
    x = np.random.default_rng(0).standard_normal((batch, *shape), dtype=np.float32)
    calls = max(1, 256 // batch)  # enough calls per round to be well above the timer's noise
    for s in sessions.values():
        for _ in range(3):
            s.run(None, {INPUT_NAME: x})
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, s in sessions.items():
            start = time.perf_counter()
            for _ in range(calls):
                s.run(None, {INPUT_NAME: x})
            times[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fp32", type=Path, default=Path("models/student.onnx"))
    parser.add_argument("--int8", type=Path, default=Path("models/student.int8.onnx"))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/int8_speed.json"))
    args = parser.parse_args()
    for path in (args.fp32, args.int8):
        if not path.is_file():
            parser.error(f"{path} not found; run `make repro` first")
    files = {"fp32": args.fp32, "int8": args.int8}
    rows = []
    print(f"{'threads':>7} {'batch':>5} {'fp32 img/s':>11} {'int8 img/s':>11} {'int8/fp32':>9}")
    for threads in args.threads:
        sessions = {name: open_session(path, threads) for name, path in files.items()}
        for batch in BATCHES:
            sec = side_by_side(sessions, batch, args.rounds)
            row = {
                "threads": threads,
                "batch": batch,
                "fp32_ms": 1000 * sec["fp32"],
                "int8_ms": 1000 * sec["int8"],
                "fp32_images_per_s": batch / sec["fp32"],
                "int8_images_per_s": batch / sec["int8"],
                "int8_speedup": sec["fp32"] / sec["int8"],
            }
            rows.append(row)
            print(
                f"{threads:>7} {batch:>5} {row['fp32_images_per_s']:>11.0f} "
                f"{row['int8_images_per_s']:>11.0f} {row['int8_speedup']:>8.2f}x",
                flush=True,
            )
    write_json(
        args.out,
        {
            "machine": {
                "cpu": platform.processor() or platform.machine(),
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "onnxruntime": ort.__version__,
            },
            "fp32": str(args.fp32),
            "int8": str(args.int8),
            "fp32_bytes": args.fp32.stat().st_size,
            "int8_bytes": args.int8.stat().st_size,
            "rounds": args.rounds,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
