"""Speed figures that survive a noisy machine: engines take turns, ratios within each round."""

from pathlib import Path

import pytest

from pipeline.core.config import Params
from pipeline.models.checkpoint import load_checkpoint
from pipeline.shipping.latency import ROUNDS, measure, round_ratios, side_by_side, speed_in_words
from tests.test_export import exported, quantized, student_ckpt  # noqa: F401  (module fixtures)


def test_engines_take_turns_within_every_round() -> None:
    order: list[str] = []
    calls = {name: (lambda n=name: order.append(n)) for name in ("a", "b", "c")}
    times = side_by_side(calls, rounds=3, repeats=2)
    warmup = 3 * 3
    assert order[warmup:] == ["a", "a", "b", "b", "c", "c"] * 3
    assert all(len(times[n]) == 3 and all(len(r) == 2 for r in times[n]) for n in calls)


def test_ratios_are_taken_within_each_round_from_its_medians() -> None:
    # Round 2 ran twice as slow for both engines (drift): within each round the ratio is 2.
    times = {"slow": [[2.0, 2.0, 9.0], [4.0, 4.0, 0.1]], "fast": [[1.0, 1.0, 1.5], [2.0, 2.0, 2.0]]}
    assert round_ratios(times, "slow", "fast") == [2.0, 2.0]
    assert round_ratios(times, "fast", "slow") == [0.5, 0.5]


def test_measure_reports_medians_with_their_spread(
    student_ckpt: Path,  # noqa: F811
    exported: Path,  # noqa: F811
    quantized: Path,  # noqa: F811
    tiny_params: Params,
) -> None:
    ckpt = load_checkpoint(student_ckpt)
    report = measure(ckpt.build(), {"onnx": exported, "int8": quantized}, (1, 28, 28), 1, 14)
    assert report["latency/rounds"] == ROUNDS and report["latency/threads"] == 1
    for engine in ("torch", "onnx", "int8"):
        rate = f"throughput/{engine}_b64_images_per_s"
        assert 0 < report[rate + "_low"] <= report[rate] <= report[rate + "_high"]
        assert report[f"latency/{engine}_b1_median_ms"] <= report[f"latency/{engine}_b1_p95_ms"]
    for batch in ("b1", "b64"):
        key = f"speed/int8_vs_fp32_{batch}"
        assert 0 < report[key + "_low"] <= report[key] <= report[key + "_high"]
    assert "INT8" in speed_in_words(report)


@pytest.mark.parametrize(
    ("low", "median", "high", "words"),
    [
        (0.7, 0.8, 0.9, "INT8 is slower than fp32"),
        (0.9, 1.1, 1.3, "not reliably faster"),
        (1.2, 1.4, 1.5, "INT8 is faster than fp32"),
    ],
)
def test_the_card_says_in_words_when_int8_is_not_faster(
    low: float, median: float, high: float, words: str
) -> None:
    report = {
        "speed/int8_vs_fp32_b64": median,
        "speed/int8_vs_fp32_b64_low": low,
        "speed/int8_vs_fp32_b64_high": high,
        "speed/int8_vs_fp32_b1": median,
    }
    sentence = speed_in_words(report)
    assert words in sentence and f"{median:.2f}x" in sentence
