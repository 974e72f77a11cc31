"""The statistics bench/docker_run.py states its figures with (bench/stats.py)."""

import random

from bench.stats import bootstrap_interval, percentile, ratio_of_medians, verdict


def test_percentile_is_the_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 50) == 51  # rank round(0.5 * 99) = 50, zero-based
    assert percentile(values, 99) == 99
    assert percentile([3.0], 99) == 3.0


def test_interval_of_paired_ratio_holds_the_true_ratio_and_narrows_with_rounds():
    rng = random.Random(7)

    def rounds(n):  # calico 3 % slower than the bridge, both drifting alike
        out = []
        for _ in range(n):
            drift = rng.uniform(0.6, 1.6)
            out.append((1.03 * drift * rng.gauss(1, 0.05), drift * rng.gauss(1, 0.05)))
        return out

    few = bootstrap_interval(rounds(10), ratio_of_medians, random.Random(1))
    many = bootstrap_interval(rounds(400), ratio_of_medians, random.Random(1))
    assert many[0] < 1.03 < many[1]
    assert many[1] - many[0] < few[1] - few[0]


def test_verdict_says_which_side_of_the_target_the_interval_is():
    assert verdict(0.95, 0.99, 1.0).startswith("<= 1.00")
    assert verdict(1.01, 1.05, 1.0).startswith("> 1.00")
    assert verdict(0.98, 1.02, 1.0).startswith("cannot tell")
