"""benchmarks/method_margins.py: wins, ties and losses beyond the seeds' spread."""

from __future__ import annotations

import importlib.util

import pandas as pd

from conftest import REPO

spec = importlib.util.spec_from_file_location("method_margins", REPO / "benchmarks" / "method_margins.py")
method_margins = importlib.util.module_from_spec(spec)
spec.loader.exec_module(method_margins)


def cell(method, bits, mean, sd, dataset="mnist"):
    return {"dataset": dataset, "pipeline": "hashing", "method": method, "bits": bits, "ground_truth": "labels", "metric": "map", "mean": mean, "sd": sd}


def test_a_win_needs_more_than_two_of_the_larger_sd():
    results = pd.DataFrame([
        cell("ssdh", 12, 90.0, 0.5), cell("ssdh", 24, 90.0, 0.5), cell("ssdh", 48, 90.0, 0.1),
        cell("dpsh", 12, 91.1, 0.2),  # +1.1 > 2 x 0.5: a win
        cell("dpsh", 24, 90.9, 0.2),  # +0.9 <= 2 x 0.5: a tie
        cell("dpsh", 48, 88.0, 0.3),  # -2.0 < -2 x 0.3: a loss
    ])
    table = method_margins.margins(results, ["ssdh"])
    assert table.to_dict("records") == [{"method": "dpsh", "reference": "ssdh", "dataset": "mnist", "won": 1, "tied": 1, "lost": 1, "mean difference": 0.0}]


def test_cells_of_other_datasets_and_metrics_are_not_mixed_in():
    results = pd.DataFrame([cell("ssdh", 12, 90.0, 0.1), cell("csq", 12, 95.0, 0.1), cell("csq", 12, 50.0, 0.1, dataset="fashion_mnist"), {**cell("csq", 12, 10.0, 0.1), "metric": "p@10"}])
    table = method_margins.margins(results, ["ssdh"])
    assert table[["method", "dataset", "won", "lost"]].to_dict("records") == [{"method": "csq", "dataset": "mnist", "won": 1, "lost": 0}]


def test_bench_hashing_trains_heads_with_the_recipe_of_config_mnist():
    """bench_hashing's head-only methods stand for config/mnist.yaml's: the same recipe."""
    import yaml

    spec = importlib.util.spec_from_file_location("bench_hashing", REPO / "benchmarks" / "bench_hashing.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    hashing = yaml.safe_load((REPO / "config" / "mnist.yaml").read_text())["hashing"]
    for method in ("dpsh", "hashnet", "dsh", "greedyhash", "csq"):
        assert {**bench.HEAD_RECIPE, **hashing[method]["head_only"]} == bench.HEAD_RECIPE, method
