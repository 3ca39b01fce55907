"""Published results: README blocks rendered from results files, and `cbir compare`'s verdicts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cbir.cli import main
from cbir.provenance import provenance
from cbir.publish import compare, render_readme, update_readme
from cbir.report import aggregate, read_results
from conftest import REPO

CONFIG = {"seeds": [0, 1, 2], "evaluation": {"topk": 1000, "neighbours": 50, "approximate_hamming": False}}


def per_seed_metrics(shift: float = 0.0, seeds=(0, 1, 2)) -> pd.DataFrame:
    """Per-seed rows as the report collects them: two hashing methods at two lengths, two ground
    truths, and one siamese/triplet model; values spread by about 0.01 over seeds."""
    rng = np.random.default_rng(0)
    rows = []
    for i, seed in enumerate(seeds):
        for method, level in (("ba", 0.9), ("itq", 0.8)):
            for bits in (12, 24):
                for gt in ("labels", "neighbours"):
                    value = level + 0.01 * rng.standard_normal() + shift
                    rows.append({"dataset": "digits", "kind": "digits", "pipeline": "hashing", "backbone": "cnn", "method": method, "bits": bits, "ground_truth": gt, "seed": seed,
                                 "map": value, "tie_aware_map": value, "map_all": value, "p@10": value, "tie_aware_p@K": value, "time_median_ms": 0.1 + 0.01 * i})
        rows.append({"dataset": "digits", "kind": "digits", "pipeline": "metric", "backbone": "cnn", "method": "TN-FT", "bits": None, "ground_truth": "labels", "seed": seed,
                     "map": 0.7 + shift, "tie_aware_map": 0.7, "map_all": 0.6 + 0.01 * i + shift, "p@10": 0.8, "tie_aware_p@K": np.nan, "time_median_ms": 0.2})
    frame = pd.DataFrame(rows)
    frame["bits"] = frame["bits"].astype("Int64")
    return frame


def published(folder, metrics) -> None:
    from cbir.io import write_table

    folder.mkdir(parents=True)
    write_table(aggregate(metrics), folder / "results.tsv", ["provenance: test"])
    (folder / "provenance.json").write_text(json.dumps(provenance(CONFIG)))


def test_aggregate_gives_mean_sd_n_and_the_values_in_percent():
    results = aggregate(per_seed_metrics())
    row = results[(results["method"] == "TN-FT") & (results["metric"] == "map_all")].iloc[0]
    assert row["mean"] == pytest.approx(61.0) and row["sd"] == pytest.approx(1.0) and row["n"] == 3
    assert row["values"] == "60;61;62" and row["seeds"] == "0;1;2" and row["unit"] == "%"
    assert set(results.loc[results["metric"] == "time_median_ms", "ground_truth"]) == {"-"}


def test_readme_blocks_are_rendered_from_the_published_files(tmp_path):
    published(tmp_path / "results" / "demo", per_seed_metrics())
    text = "intro\n<!-- results demo hashing labels -->\nstale\n<!-- end results -->\n<!-- results demo metric -->\n<!-- end results -->\nend\n"
    rendered = render_readme(text, tmp_path / "results")
    assert rendered.startswith("intro\n") and rendered.endswith("end\n") and "stale" not in rendered
    hashing = rendered.split("<!-- results demo metric -->")[0]
    assert "mAP@1000 (%), ground truth: class labels" in hashing and "n = 3 seeds" in hashing
    ba = next(line for line in hashing.splitlines() if line.startswith("| digits | BA |"))
    assert ba.count("±") == 2  # 12 and 24 bits
    assert "| digits | TN-FT | 80.00 ± 0.00 | 61.00 ± 1.00 |" in rendered
    assert render_readme(rendered, tmp_path / "results") == rendered  # rendering is stable
    readme = tmp_path / "README.md"
    readme.write_text(text)
    assert not update_readme(readme, tmp_path / "results", check=True) and readme.read_text() == text
    update_readme(readme, tmp_path / "results")
    assert update_readme(readme, tmp_path / "results", check=True)


def test_compare_flags_numbers_outside_three_sd(tmp_path):
    published(tmp_path / "published", per_seed_metrics())
    published(tmp_path / "same", per_seed_metrics(seeds=(5, 6)))
    published(tmp_path / "off", per_seed_metrics(shift=0.2, seeds=(5, 6)))
    same = compare(tmp_path / "same/results.tsv", tmp_path / "published/results.tsv")
    assert not same["outside"].any() and set(same["status"]) == {"inside", "time (no verdict)"}
    off = compare(tmp_path / "off/results.tsv", tmp_path / "published/results.tsv")
    judged = off[off["status"] != "time (no verdict)"]
    # 20 points off: every hashing number, and the two shifted metric-learning numbers.
    assert judged["outside"].sum() == len(judged) - 2  # TN-FT's unshifted tie-aware mAP and P@10 stay inside
    assert (judged.loc[~judged["outside"].astype(bool), "method"] == "TN-FT").all()


def test_compare_command_exit_status_and_report(tmp_path, capsys):
    published(tmp_path / "published", per_seed_metrics())
    published(tmp_path / "off", per_seed_metrics(shift=0.2))
    assert main(["compare", str(tmp_path / "published"), str(tmp_path / "published")]) == 0
    assert "0 outside" in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "off/results.tsv"), str(tmp_path / "published")]) == 1
    out = capsys.readouterr().out
    assert "OUTSIDE ±3 sd" in out and "published: seeds 0, 1, 2; commit" in out
    assert out.splitlines()[0].split() == ["number", "published", "yours", "status"]  # which column is which, by name
    assert main(["compare", str(tmp_path / "nowhere"), str(tmp_path / "published")]) == 2


def test_publish_needs_a_finished_run(tmp_path, capsys):
    from cbir.publish import publish

    with pytest.raises(FileNotFoundError, match="run the workflow to the end first"):
        publish(tmp_path / "report", "demo", tmp_path / "published")
    (tmp_path / "report").mkdir()
    published(tmp_path / "src", per_seed_metrics())
    for name in ("results.tsv", "provenance.json"):
        (tmp_path / "report" / name).write_bytes((tmp_path / "src" / name).read_bytes())
    target = publish(tmp_path / "report", "demo", tmp_path / "published")
    assert read_results(target / "results.tsv").equals(read_results(tmp_path / "src/results.tsv"))


@pytest.mark.parametrize("page, blocks", [("README.md", ("mnist hashing labels", "mnist hashing neighbours")), ("docs/results.md", ("default hashing labels", "default hashing neighbours", "mnist metric"))])
def test_published_tables_are_the_rendering_of_the_published_results(page, blocks):
    text = (REPO / page).read_text()
    assert all(f"<!-- results {block} -->" in text for block in blocks)
    assert render_readme(text, REPO / "resources" / "results") == text, f"{page} is stale: run `uv run cbir readme`"
