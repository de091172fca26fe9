"""The paired comparison behind the benchmark's verdicts, on hand-computed examples."""

import math

import pytest

from benchmarks.paired import paired, t_quantile


def test_t_quantiles_are_exact_at_every_df() -> None:
    # Standard tables to 3 decimals; beyond df 30 too (a table ending there once fell back to
    # the normal 1.960 at df 31, where t is 2.040).
    for df, tabled in ((1, 12.706), (4, 2.776), (30, 2.042), (31, 2.040), (60, 2.000)):
        assert t_quantile(df) == pytest.approx(tabled, abs=5e-4)
    assert 1.960 < t_quantile(500) < 1.966
    with pytest.raises(ValueError, match="at least 2 pairs"):
        t_quantile(0)


def test_paired_interval_by_hand() -> None:
    # Differences 1, 2, 3: mean 2, sample std 1, half-width t(2) / sqrt(3) = 4.3027 / 1.732.
    c = paired({0: 11.0, 1: 12.0, 2: 13.0}, {0: 10.0, 1: 10.0, 2: 10.0})
    half = 4.302653 / math.sqrt(3)
    assert (c.n, c.mean, c.std, c.wins) == (3, 2.0, 1.0, 3)
    assert (c.low, c.high) == pytest.approx((2 - half, 2 + half))
    assert c.verdict == "no detectable difference from"  # ahead on 3 of 3, yet inside the noise
    # With the same spread, n = 4 gives t(3) / 2 = 1.59 < 2: the first n that excludes 0.
    assert c.seeds_needed() == 4


def test_a_consistent_lead_beats_and_a_consistent_deficit_loses() -> None:
    a = {s: 80.0 + s for s in range(5)}
    ahead = {s: v - 1.0 - 0.1 * (s % 2) for s, v in a.items()}
    assert paired(a, ahead).verdict == "beats"
    assert paired(ahead, a).verdict == "loses to"


def test_only_shared_seeds_pair_up() -> None:
    c = paired({0: 1.0, 1: 2.0, 7: 100.0}, {0: 0.0, 1: 0.0, 9: 0.0})
    assert c.n == 2 and c.mean == 1.5
    with pytest.raises(ValueError, match="at least 2 shared seeds"):
        paired({0: 1.0}, {0: 0.0, 1: 0.0})


def test_the_comparison_holds_the_modern_distillers_at_five_seeds() -> None:
    from benchmarks.experiments import cells, definition
    from pipeline.core.params import parse_params

    grid = cells("comparison", definition("comparison"))
    seeds = {overlay["distill"]["seed"] for _, overlay in grid.values()}
    assert len(seeds) >= 5 and len(grid) == len(seeds) * len(
        {a["method"] for a, _ in grid.values()}
    )
    objectives = {overlay["distill"]["objectives"][0] for _, overlay in grid.values()}
    assert {"vanilla", "kd", "dkd", "dist", "sokd"} <= objectives
    standardised = {
        axes["method"]
        for axes, overlay in grid.values()
        if overlay["distill"]
        .get(overlay["distill"]["objectives"][0], {})
        .get("logit_standardisation")
    }
    assert {"kd_ls", "dkd_ls", "sokd_ls"} <= standardised
    params = parse_params(grid["comparison-sokd_reference-s3"][1])
    cfg = params.distill.objective("sokd")
    assert (cfg.bridge_init, cfg.teacher_bn, params.distill.seed) == ("random", "train", 3)
    assert params.train_teacher.seed == 0  # one teacher for every student seed
    assert params.distill.test_curve  # the best epoch papers quote, beside the last


def test_an_unknown_benchmark_is_one_clear_error() -> None:
    from benchmarks.experiments import definition

    with pytest.raises(
        SystemExit, match=r"no benchmark 'nope'.*known: \[.*'comparison', 'user_path'\]"
    ):
        definition("nope")
