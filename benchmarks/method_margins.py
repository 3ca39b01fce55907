"""Which methods beat a reference method beyond the seeds' spread, cell by cell.

    uv run python benchmarks/method_margins.py resources/results/mnist-deep/results.tsv \\
        resources/results/mnist/results.tsv --against ssdh cca_itq

Reads published (or fresh) ``results.tsv`` files, takes the headline label metric (mAP@k) of every
hashing method per dataset and code length, and compares each method with each reference: a
method *beats* the reference in a cell when its mean exceeds the reference's by more than
``--sd`` (2) times the larger of the two standard deviations over seeds, *loses* when it falls
short by as much, and *ties* otherwise. Prints one line per (method, reference, dataset): the
cells won, tied and lost, and the mean difference.
"""

from __future__ import annotations

import argparse

import pandas as pd

from cbir.report import read_results


def margins(results: pd.DataFrame, against: list[str], n_sd: float = 2.0, metric: str = "map", ground_truth: str = "labels") -> pd.DataFrame:
    """Per (method, reference, dataset): cells (code lengths) won, tied and lost beyond ``n_sd``
    times the larger sd, and the mean difference of the means (points)."""
    cells = results[(results["pipeline"] == "hashing") & (results["metric"] == metric) & (results["ground_truth"] == ground_truth)]
    cells = cells.drop_duplicates(["dataset", "method", "bits"], keep="first").set_index(["dataset", "method", "bits"]).sort_index()[["mean", "sd"]]
    rows = []
    for reference in against:
        for (dataset, method), own in cells.groupby(level=["dataset", "method"]):
            if method == reference or (dataset, reference) not in cells.droplevel("bits").index:
                continue
            ref = cells.loc[(dataset, reference)]
            own = own.droplevel(["dataset", "method"]).loc[lambda frame: frame.index.isin(ref.index)]
            difference = own["mean"] - ref.loc[own.index, "mean"]
            band = n_sd * pd.concat([own["sd"], ref.loc[own.index, "sd"]], axis=1).max(axis=1)
            rows.append({
                "method": method, "reference": reference, "dataset": dataset,
                "won": int((difference > band).sum()), "tied": int((difference.abs() <= band).sum()), "lost": int((difference < -band).sum()),
                "mean difference": round(float(difference.mean()), 2),
            })
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="results.tsv files (the first one's rows win where two hold the same cell)")
    parser.add_argument("--against", nargs="+", required=True, help="reference methods")
    parser.add_argument("--sd", type=float, default=2.0, help="the margin, in the larger sd over seeds")
    args = parser.parse_args(argv)
    results = pd.concat([read_results(path) for path in args.results], ignore_index=True)
    table = margins(results, args.against, args.sd)
    print(f"label mAP@k: cells won / tied / lost against each reference, beyond {args.sd:g} sd (the larger of the two)")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
