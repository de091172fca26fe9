"""Batch-1 latency of ONNX files by the budget's protocol, with numpy and onnxruntime alone.

The same code times the candidates in `profile`, the shipped file in `verify`, and, copied by
`sokd profile --export DIR` beside the candidates' files, runs on the machine the student will
run on, where neither torch nor this project is installed:

    python DIR/time_candidates.py DIR      # writes DIR/latencies.json; then in params.yaml
                                           # budget.latencies_from: DIR/latencies.json

Protocol: a warm-up, then ROUNDS rounds in which the files take turns, CALLS calls per file in
all, on sessions with `threads` intra-op threads that do not spin (the one waiting leaves the
cores to the one timed). Each figure is the median over rounds of that round's percentile: pooled
over every call, one slow second of a shared machine (a round at twice the time) would become the
p90 itself; the median over rounds ignores up to four bad rounds of ten.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# 1,000 timed calls per file, the floor the budget issue set: a p90 then rests on the 100 slowest.
CALLS = 1000
ROUNDS = 10
MANIFEST = "manifest.json"
LATENCIES = "latencies.json"


def cpu_session(path: Path, threads: int, spinning: bool = True) -> Any:
    """An onnxruntime CPU session (an InferenceSession) with `threads` intra-op threads;
    `spinning=False` lets idle pool threads sleep at once, so that of two sessions taking turns on
    a small CPU the idle one does not steal the cores from the busy one."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def side_by_side(
    calls: dict[str, Callable[[], object]], rounds: int, repeats: int
) -> dict[str, list[list[float]]]:
    """Seconds of each call, `repeats` per engine per round, the engines taking turns in a round.

    Returns engine -> one list of call times per round.
    """
    for call in calls.values():  # warm-up: allocations, kernel selection, caches
        for _ in range(3):
            call()
    times: dict[str, list[list[float]]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            this_round = []
            for _ in range(repeats):
                start = time.perf_counter()
                call()
                this_round.append(time.perf_counter() - start)
            times[name].append(this_round)
    return times


def latencies(files: dict[str, Path], threads: int) -> dict[str, tuple[float, float]]:
    """Per file, p50 and p90 in ms of batch-1 calls on random images of its input."""
    sessions = {name: cpu_session(path, threads, spinning=False) for name, path in files.items()}
    feeds = {name: {s.get_inputs()[0].name: random_input(s)} for name, s in sessions.items()}
    calls = {name: (lambda s=s, f=feeds[name]: s.run(None, f)) for name, s in sessions.items()}
    times = side_by_side(calls, ROUNDS, CALLS // ROUNDS)
    return {
        name: (
            1000 * statistics.median(float(np.percentile(r, 50)) for r in rounds),
            1000 * statistics.median(float(np.percentile(r, 90)) for r in rounds),
        )
        for name, rounds in times.items()
    }


def random_input(session: Any, batch: int = 1) -> np.ndarray:
    """A random batch of what the session reads: uint8 images or normalised floats (the cost of
    these networks does not depend on pixel values); a file that reads any size gets images at
    the network's input size (its resize then costs what it costs on such images)."""
    shape = (batch, *session.get_inputs()[0].shape[1:])
    if not all(isinstance(side, int) for side in shape[1:3]):  # any size: the network's own
        spec = json.loads(session.get_modelmeta().custom_metadata_map.get("input_spec", "{}"))
        shape = (batch, *spec.get("size", (224, 224)), shape[3])
    rng = np.random.default_rng(0)
    if session.get_inputs()[0].type == "tensor(uint8)":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.standard_normal(shape, dtype=np.float32)


def this_machine(threads: int) -> dict[str, object]:
    """The CPU, its flags, onnxruntime and the threads: what a latency depends on."""
    import onnxruntime as ort

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (ln.split(":", 1)[1].strip() for ln in info.splitlines() if "model name" in ln), ""
    )
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if "flags" in ln), [])
    speed = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimd")
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "cpu_flags": [f for f in speed if f in flags],
        "onnxruntime": ort.__version__,
        "threads": threads,
    }


def time_folder(folder: Path) -> Path:
    """Time every file `manifest.json` in `folder` lists; write and return latencies.json."""
    manifest = json.loads((folder / MANIFEST).read_text())
    files = {name: folder / rel for name, rel in manifest["files"].items()}
    figures = latencies(files, manifest["threads"])
    out = folder / LATENCIES
    result = {
        "machine": this_machine(manifest["threads"]),
        "calls_per_file": CALLS,
        "rounds": ROUNDS,
        "files": {n: {"p50_ms": p50, "p90_ms": p90} for n, (p50, p90) in figures.items()},
    }
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python time_candidates.py DIR  (the folder `sokd profile --export` wrote)")
    print(f"wrote {time_folder(Path(sys.argv[1]))}")
