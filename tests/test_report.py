"""The report's figures: what they draw from the numbers they are given."""

import pandas as pd

import cbir.report as report


def test_ba_objective_figure_draws_each_seed_to_its_own_last_iteration(monkeypatch, tmp_path):
    # Seed 0 stops after 5 MAC iterations, seed 1 after 3: a mean over the seeds still running
    # would jump at iteration 4; one line per seed ends where its seed stopped.
    traces = pd.DataFrame(
        [{"run": "digits/smallcnn", "seed": seed, "bits": 12, "iteration": i, "E_Q": 10.0 - i + seed, "E_BA": 5.0 - i / 2} for seed, stop in ((0, 5), (1, 3)) for i in range(stop)]
    )
    saved = []
    monkeypatch.setattr(report, "_save", lambda figure, path: saved.append(figure))
    report.ba_objective_figure(traces, tmp_path / "fig5.png")
    (figure,) = saved
    top = figure.axes[0]
    lines = [line for line in top.get_lines() if len(line.get_xdata())]
    ends = sorted((int(line.get_xdata()[-1]), float(line.get_ydata()[-1])) for line in lines)
    assert ends == [(2, 9.0), (4, 6.0)]  # each seed's own last point, not a mean
