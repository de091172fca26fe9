"""How much the budget's latency figure moves between measurements of one file: the evidence for
the tolerance `verify` allows on `budget.latency_ms` (pipeline.shipping.profile.LATENCY_TOLERANCE).

    python -m benchmarks.budget_noise [--repeats 30] [--note "what else ran"] [--out ...]

Builds two candidates' INT8 files as `profile` does (on data/prepared.pt: run `make repro`
first), then measures each file's p90 `--repeats` times by the budget protocol and records every
figure with its spread around the median and the machine. Run it as the gate will run: on a
shared machine, say what else was running (`--note`).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from pipeline.core.config import QuantizeConfig
from pipeline.core.files import write_json
from pipeline.core.runtime import machine
from pipeline.data.datasets import load_prepared
from pipeline.shipping.profile import candidate_files
from pipeline.shipping.timing import latencies

ARCHS = ("resnet8", "mobilenetv2_x0_5")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/prepared.pt"))
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--note", default="")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/budget_noise.json"))
    args = parser.parse_args()
    data = load_prepared(args.data, ("train",))
    result = {"machine": machine(), "note": args.note, "repeats": args.repeats, "files": {}}
    with tempfile.TemporaryDirectory() as work:
        for arch in ARCHS:
            built = candidate_files(arch, data, QuantizeConfig(), 0, Path(work))
            p90s = [latencies({arch: built["int8"]}, 1)[arch][1] for _ in range(args.repeats)]
            median = statistics.median(p90s)
            result["files"][arch] = {
                "p90_ms": p90s,
                "max_over_median": max(p90s) / median,
                "min_over_median": min(p90s) / median,
            }
            print(f"{arch}: p90 median {median:.4f} ms, {min(p90s) / median:.3f}-"
                  f"{max(p90s) / median:.3f}x the median", flush=True)  # fmt: skip
    write_json(args.out, result)


if __name__ == "__main__":
    main()
