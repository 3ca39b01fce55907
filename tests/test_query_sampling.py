"""benchmarks/query_sampling.py: the spread a headline number takes from the query draw alone."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location("query_sampling", REPO / "benchmarks" / "query_sampling.py")
query_sampling = importlib.util.module_from_spec(spec)
spec.loader.exec_module(query_sampling)


def test_the_bootstrap_sd_is_the_binomial_sd_of_a_pass_fail_draw():
    # 1,000 queries of which 5 fail outright: the mean's sd is sqrt(p (1 - p) / n) points.
    aps = np.ones(1000)
    aps[:5] = 0.0
    spread = query_sampling.query_spread([aps, aps, np.ones(1000)], resamples=4000)
    assert spread["failed"] == [5, 5, 0]
    assert spread["boot_sd"][0] == pytest.approx(100 * np.sqrt(0.005 * 0.995 / 1000), rel=0.1)
    assert spread["boot_sd"][2] == 0.0
    assert spread["mean"] == pytest.approx((99.5 + 99.5 + 100) / 3)
    assert spread["sd"] == pytest.approx(np.std([99.5, 99.5, 100], ddof=1))


def test_the_chance_of_a_small_sd_falls_as_the_draw_spreads():
    # Three seeds: sample variance ~ sigma^2 chi^2_2 / 2, so P(sd <= sigma) = 1 - exp(-1).
    assert query_sampling.chance_sd_at_most(0.2, 0.2, 3) == pytest.approx(1 - np.exp(-1))
    assert query_sampling.chance_sd_at_most(0.15, 0.3, 3) < query_sampling.chance_sd_at_most(0.15, 0.1, 3)


def test_a_row_per_descriptor_of_the_default_run(default_run, capsys):
    query_sampling.main(["--configfile", str(REPO / "config.yaml"), "--results", str(default_run / "results"), "--methods", "itq", "--sd", "0.15", "--resamples", "50"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert [line.split()[1] for line in lines[:-1]] == [f"hashing/smallcnn/itq/{b}" for b in (12, 24, 32, 48)]
    assert lines[-1].startswith("median chance, over 4 descriptors")
