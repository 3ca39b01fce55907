"""How much of a headline number's spread over seeds is the test queries' sampling alone.

    uv run python benchmarks/query_sampling.py --configfile config/mnist.yaml --results results \\
        --datasets mnist --methods ssdh hashnet_head cca_itq --sd 0.15

Each seed draws its own queries (config/mnist.yaml: 100 random test images per class), so a
mean over three seeds varies with which images were drawn even if every seed trained the same
network. For every (dataset, descriptor) of a finished run this prints the label mAP@k's mean and
sd over seeds beside the bootstrap sd of each seed's mean over its own queries (resampled with
replacement, ``--resamples`` times): the sd a seed's number would show from the query draw alone.
``failed`` counts each seed's queries with AP below 0.5 (coded or ranked as another class).

With ``--sd`` it also prints the chance that three seeds' sample sd stays at or below that value
when the seeds differ by the query draw alone, taken as normal with the bootstrap sd (the sample
variance of n such means is sigma^2 chi^2_(n-1) / (n-1)). A low chance means that no method, however
good, meets that target reliably with this many queries.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from scipy.stats import chi2

from cbir.config import load_config
from cbir.paths import Layout, descriptor_names, parse_descriptor


def query_spread(per_query: list[np.ndarray], resamples: int, seed: int = 0) -> dict:
    """Mean and sd over seeds of the per-seed means of ``per_query`` (one array of per-query APs
    per seed), each seed's bootstrap sd over its queries (all in points, APs times 100), and its
    failed queries (AP below 0.5)."""
    rng = np.random.default_rng(seed)
    failed = [int((v < 0.5).sum()) for v in per_query]
    per_query = [v * 100 for v in per_query]
    means = [float(v.mean()) for v in per_query]
    boot = [float(v[rng.integers(0, len(v), (resamples, len(v)))].mean(1).std()) for v in per_query]
    return {"mean": float(np.mean(means)), "sd": float(np.std(means, ddof=1)) if len(means) > 1 else float("nan"), "boot_sd": boot, "failed": failed}


def chance_sd_at_most(target: float, sigma: float, n_seeds: int) -> float:
    """P(sample sd of ``n_seeds`` normal means with sd ``sigma`` <= ``target``)."""
    return float(chi2.cdf((n_seeds - 1) * (target / sigma) ** 2, n_seeds - 1))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", required=True)
    parser.add_argument("--results", help="the run's results folder (default: the config's results_dir)")
    parser.add_argument("--datasets", nargs="+", help="default: the config's")
    parser.add_argument("--methods", nargs="+", help="hashing methods (default: every descriptor, features and metric models too)")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--sd", type=float, help="a target sd over seeds: print the chance the query draw alone stays within it")
    args = parser.parse_args(argv)

    config = load_config(args.configfile)
    layout = Layout(args.results or config["results_dir"], config["report_dir"])
    seeds, metric = config["seeds"], "map"
    rows = []
    for dataset in args.datasets or list(config["datasets"]):
        for descriptor in descriptor_names(config, dataset):
            fields = parse_descriptor(descriptor)
            if args.methods and fields["method"] not in args.methods:
                continue
            per_query = []
            for seed in seeds:
                frame = pd.read_parquet(layout.evaluation(dataset, seed, descriptor, "per_query"))
                per_query.append(frame.loc[frame["ground_truth"] == "labels", metric].to_numpy(dtype=np.float64))
            spread = query_spread(per_query, args.resamples)
            row = {"dataset": dataset, "descriptor": descriptor, **spread}
            if args.sd is not None:
                row["chance"] = chance_sd_at_most(args.sd, float(np.mean(spread["boot_sd"])), len(seeds))
            rows.append(row)
            boot = " / ".join(f"{b:.2f}" for b in spread["boot_sd"])
            chance = f"  P(sd <= {args.sd:g}) {row['chance']:.2f}" if args.sd is not None else ""
            print(f"{dataset:<14} {descriptor:<40} mAP {spread['mean']:6.2f} ± {spread['sd']:.2f}  query-draw sd per seed {boot}  failed {spread['failed']}{chance}", flush=True)
    if rows and args.sd is not None:
        print(f"\nmedian chance, over {len(rows)} descriptors, that {len(seeds)} seeds' sd stays <= {args.sd:g} from the query draw alone: {np.median([r['chance'] for r in rows]):.2f}")


if __name__ == "__main__":
    main()
