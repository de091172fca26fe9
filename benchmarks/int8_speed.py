"""Speed of the deployable files: onnxruntime fp32 against INT8, side by side in one run.

    python -m benchmarks.int8_speed [--fp32 models/student.onnx]
                                    [--int8 models/int8/student.int8.onnx] [--threads 1 2]
                                    [--rounds 30] [--out benchmarks/int8_speed.json]

For each thread count and batch size (1 and 64), the two sessions are timed in alternating rounds
(fp32, then INT8, then fp32, ...), so slow drift of a shared machine hits both alike; the speed-up
is the median of the per-round ratios, with their 10th-90th percentiles. Then onnxruntime's
profiler splits one thread's batch-64 time by operator type, to show where INT8 saves and where
it pays (layout changes, quantize/dequantize around the parts left in fp32). Inputs are random:
the cost does not depend on pixel values.
Run it after `make repro`, which writes both files.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnxruntime as ort

from pipeline.core.files import write_json
from pipeline.core.runtime import machine
from pipeline.shipping.engines import INPUT_NAME, Engine, engine_calls, open_engine
from pipeline.shipping.latency import side_by_side
from pipeline.shipping.timing import random_input

BATCHES = (1, 64)


def timed_rounds(engines: dict[str, Engine], batch: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each engine in each round (the card's method: shipping.latency)."""
    shape = next(iter(engines.values())).input_chw
    x = np.random.default_rng(0).standard_normal((batch, *shape), dtype=np.float32)
    repeats = max(1, 256 // batch)  # enough calls per round to be well above the timer's noise
    times = side_by_side(engine_calls(engines, x), rounds, repeats)
    return {name: [statistics.median(r) for r in per_round] for name, per_round in times.items()}


def operator_times(path: Path, batch: int, runs: int = 20) -> dict[str, float]:
    """Milliseconds per call spent in each operator type (onnxruntime's profiler, one thread)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as scratch:
        options.profile_file_prefix = str(Path(scratch) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        x = random_input(session, batch)
        for _ in range(runs):
            session.run(None, {INPUT_NAME: x})
        events = json.loads(Path(session.end_profiling()).read_text())
    per_op: Counter[str] = Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"] / 1000 / runs
    return dict(per_op.most_common())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fp32", type=Path, default=Path("models/student.onnx"))
    parser.add_argument("--int8", type=Path, default=Path("models/int8/student.int8.onnx"))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/int8_speed.json"))
    args = parser.parse_args()
    for path in (args.fp32, args.int8):
        if not path.is_file():
            parser.error(f"{path} not found; run `make repro` first")
    files = {"fp32": args.fp32, "int8": args.int8}
    rows = []
    print(
        f"{'threads':>7} {'batch':>5} {'fp32 img/s':>11} {'int8 img/s':>11} {'int8/fp32':>9} "
        f"{'rounds p10-p90':>15}"
    )
    for threads in args.threads:
        # The sessions take turns: without spinning, the idle one leaves the cores to the other.
        engines = {name: open_engine(path, threads, spinning=False) for name, path in files.items()}
        for batch in BATCHES:
            sec = timed_rounds(engines, batch, args.rounds)
            # Both files ran back to back in each round: their ratio there is what drift spares.
            ratios = [f / q for f, q in zip(sec["fp32"], sec["int8"], strict=True)]
            fp32, int8 = statistics.median(sec["fp32"]), statistics.median(sec["int8"])
            row = {
                "threads": threads,
                "batch": batch,
                "fp32_ms": 1000 * fp32,
                "int8_ms": 1000 * int8,
                "fp32_images_per_s": batch / fp32,
                "int8_images_per_s": batch / int8,
                "int8_speedup": statistics.median(ratios),
                "int8_speedup_p10": float(np.percentile(ratios, 10)),
                "int8_speedup_p90": float(np.percentile(ratios, 90)),
            }
            rows.append(row)
            print(
                f"{threads:>7} {batch:>5} {row['fp32_images_per_s']:>11.0f} "
                f"{row['int8_images_per_s']:>11.0f} {row['int8_speedup']:>8.2f}x "
                f"{row['int8_speedup_p10']:>8.2f}-{row['int8_speedup_p90']:.2f}",
                flush=True,
            )
    batch = max(BATCHES)
    operators = {name: operator_times(path, batch) for name, path in files.items()}
    print(f"\nmilliseconds per batch of {batch} in each operator type (1 thread, profiler on):")
    for name, ops in operators.items():
        listed = ", ".join(f"{op} {ms:.2f}" for op, ms in ops.items() if ms >= 0.01)
        print(f"  {name}: total {sum(ops.values()):.2f} = {listed}")
    write_json(
        args.out,
        {
            "machine": machine() | {"onnxruntime": ort.__version__},
            "fp32": str(args.fp32),
            "int8": str(args.int8),
            "fp32_bytes": args.fp32.stat().st_size,
            "int8_bytes": args.int8.stat().st_size,
            "rounds": args.rounds,
            "rows": rows,
            f"operator_ms_batch{batch}_1thread": operators,
        },
    )


if __name__ == "__main__":
    main()
