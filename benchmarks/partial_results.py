"""The hashing numbers of a run that did not reach its report: every evaluation summary found,
per dataset, method and length, as "mean (seed, seed, ...)" over the seeds that finished.

    uv run python benchmarks/partial_results.py results            # a results folder
    tar xzf summaries.tgz && uv run python benchmarks/partial_results.py results

Label rows: mAP@k (the first paper's); neighbour rows: tie-aware precision@K against the K
Euclidean nearest database items. A finished run has its report (results.tsv, mean ± sd); this is
for the one that stopped, and says which seeds each number rests on.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd

PATTERN = re.compile(r"(?P<dataset>[^/]+)/seed(?P<seed>\d+)/evaluation/hashing/(?P<backbone>[^/]+)/(?P<method>[^/]+)/(?P<bits>\d+)/summary\.parquet$")
METRIC = {"labels": ("map", "{:.2f}"), "neighbours": ("tie_aware_p@K", "{:.1f}")}


def collect(results: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(results.glob("*/seed*/evaluation/hashing/*/*/*/summary.parquet")):
        match = PATTERN.search(path.relative_to(results).as_posix())
        if match is None:
            continue
        for _, row in pd.read_parquet(path).iterrows():
            column, _ = METRIC[row["ground_truth"]]
            rows.append({**match.groupdict(), "truth": row["ground_truth"], "value": 100 * row[column]})
    frame = pd.DataFrame(rows)
    if frame.empty:
        raise SystemExit(f"no hashing evaluation summaries under {results}")
    return frame.astype({"seed": int, "bits": int})


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
    args = parser.parse_args(argv)
    print(table(collect(args.results), args.methods))


if __name__ == "__main__":
    main()
