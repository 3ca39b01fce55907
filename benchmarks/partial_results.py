"""The hashing numbers of a run that did not reach its report: every evaluation summary found,
per dataset, method and length, as "mean (seed, seed, ...)" over the seeds that finished.

    uv run python benchmarks/partial_results.py results            # a results folder
    tar xzf summaries.tgz && uv run python benchmarks/partial_results.py results

Label rows: mAP@k (the first paper's); neighbour rows: tie-aware precision@K against the K
Euclidean nearest database items. A finished run has its report (results.tsv, mean ± sd); this is
for the one that stopped, and says which seeds each number rests on.

``--tsv FILE`` also writes every metric of those summaries in results.tsv's layout, so that
``cbir compare FILE resources/results/<name>`` holds them against a published run:

    uv run python benchmarks/partial_results.py results --tsv partial.tsv
    uv run cbir compare partial.tsv resources/results/mnist
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd

from cbir.io import write_table
from cbir.paths import parse_descriptor
from cbir.report import aggregate

# The inverse of Layout.evaluation for hashing descriptors: <dataset>/seed<s>/evaluation/<descriptor>/summary.parquet
PATTERN = re.compile(r"(?P<dataset>[^/]+)/seed(?P<seed>\d+)/evaluation/(?P<descriptor>hashing/[^/]+/[^/]+/\d+)/summary\.parquet$")
METRIC = {"labels": ("map", "{:.2f}"), "neighbours": ("tie_aware_p@K", "{:.1f}")}


def summaries(results: Path) -> pd.DataFrame:
    """One row per (dataset, seed, hashing descriptor, ground truth), with every metric, as the
    report's ``collect`` has them (without the search times, which a summary does not hold)."""
    rows = []
    for path in sorted(results.glob("*/seed*/evaluation/hashing/*/*/*/summary.parquet")):
        match = PATTERN.search(path.relative_to(results).as_posix())
        if match is None:
            continue
        dataset, seed, descriptor = match["dataset"], int(match["seed"]), parse_descriptor(match["descriptor"])
        # The dataset's key stands in for its kind, which a summary does not record (compare ignores kind).
        for summary in pd.read_parquet(path).to_dict("records"):
            rows.append({"dataset": dataset, "kind": dataset, "seed": seed, **descriptor, **summary})
    if not rows:
        raise SystemExit(f"no hashing evaluation summaries under {results}")
    frame = pd.DataFrame(rows)
    frame["bits"] = frame["bits"].astype("Int64")
    return frame


def headline_values(frame: pd.DataFrame) -> pd.DataFrame:
    """The headline number of each summary row, in percent."""
    values = [100 * row[METRIC[row["ground_truth"]][0]] for _, row in frame.iterrows()]
    return frame[["dataset", "seed", "method", "bits"]].assign(truth=frame["ground_truth"].to_numpy(), value=values).astype({"bits": int})


def table(frame: pd.DataFrame, methods: list[str] | None) -> str:
    bits = sorted(frame["bits"].unique())
    lines = ["| dataset | method | ground truth | seeds | " + " | ".join(f"{b} bits" for b in bits) + " |", "|---" * (4 + len(bits)) + "|"]
    for (dataset, truth, method), group in frame.groupby(["dataset", "truth", "method"], sort=True):
        if methods and method not in methods:
            continue
        fmt = METRIC[truth][1]
        cells = []
        for b in bits:
            values = group[group["bits"] == b].sort_values("seed")["value"].tolist()
            cells.append(f"{fmt.format(sum(values) / len(values))} ({', '.join(fmt.format(v) for v in values)})" if values else "–")
        seeds = ", ".join(map(str, sorted(group["seed"].unique())))
        lines.append(f"| {dataset} | {method} | {truth} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="a results folder (results_dir of the config)")
    parser.add_argument("--methods", nargs="+", help="only these methods")
    parser.add_argument("--tsv", type=Path, help="also write every metric in results.tsv's layout (for cbir compare)")
    args = parser.parse_args(argv)
    frame = summaries(args.results)
    print(table(headline_values(frame), args.methods))
    if args.tsv:
        write_table(aggregate(frame), args.tsv, [f"partial run: hashing evaluation summaries under {args.results.resolve()}"])


if __name__ == "__main__":
    main()
