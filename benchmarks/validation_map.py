"""Validation scores of a run's hash codes, to choose a recipe without looking at the test queries.

The queries are the training images that fine-tuning held out (its seeded
``validation_fraction``; for SSDH the same images, held out of its training too), each ranked
against the run's database without itself (a protocol whose database is the training set has
its held-out images in the database). Two ground truths, as in the evaluation stage: class
labels (mAP@k) and, with ``--neighbours``, the K Euclidean nearest database items in the float
feature space the hashers were fitted on (tie-aware precision@K, the binary autoencoder paper's
protocol; ``evaluation.neighbours`` gives K). Several thousand queries instead of the test
protocol's 1,000 make differences between recipes visible that the test numbers' seed-to-seed
spread hides. The unsupervised hashers fit on every training row (or on ``hashing.train_sample``
of them), these included: the queries are held out from the CNN, not from the hasher.

    uv run python benchmarks/validation_map.py --configfile config/mnist.yaml
    uv run python benchmarks/validation_map.py --configfile config/mnist.yaml --methods ba itq --neighbours --results results

Prints one row per (dataset, method, bits, seed) and their mean ± sd over seeds. ``failed``
counts queries whose AP is below 0.5 (mostly queries coded as another class). Descriptor files
not (yet) written are listed as missing and skipped.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import pandas as pd

from cbir.config import load_config
from cbir.deephash.core import training_recipe
from cbir.evaluation import reference_space
from cbir.features import validation_mask
from cbir.io import read_descriptors
from cbir.methods import deep_hashers
from cbir.metrics import evaluate_distances, relevance_from_labels, tie_aware_precision_at_k
from cbir.paths import Layout
from cbir.search import pairwise_hamming


def held_out_fraction(config: dict, backbone: str, method: str) -> float:
    """The validation fraction the codes' network was trained with (a deep hashing method trained
    end to end may change it; every other method holds out the backbone's)."""
    backbone_cfg = config["backbones"][backbone]
    recipe = training_recipe(backbone_cfg, config["hashing"][method]) if method in deep_hashers() else backbone_cfg["finetune"]
    return recipe["validation_fraction"]


def _neighbours_without_self(space: np.ndarray, queries: np.ndarray, database: np.ndarray, n_neighbours: int, chunk: int = 512) -> np.ndarray:
    """(Q, N) bool: each query's ``n_neighbours`` nearest database items by Euclidean distance
    in ``space`` (ties at the last included), the query itself left out."""
    relevant = np.zeros((len(queries), len(database)), dtype=bool)
    d = space[database].astype(np.float64)
    d_sq = (d**2).sum(1)
    for start in range(0, len(queries), chunk):
        rows = queries[start : start + chunk]
        q = space[rows].astype(np.float64)
        dist = (q**2).sum(1)[:, None] + d_sq[None, :] - 2 * q @ d.T
        dist[rows[:, None] == database[None, :]] = np.inf
        kth = np.partition(dist, n_neighbours - 1, axis=1)[:, n_neighbours - 1 : n_neighbours]
        relevant[start : start + chunk] = dist <= kth
    return relevant


def held_out_rows(descriptors, fraction: float, seed: int, what) -> tuple[np.ndarray, np.ndarray]:
    """Row numbers of the held-out training images (the queries) and of the database."""
    train_rows = np.flatnonzero(descriptors.train)
    queries = train_rows[validation_mask(len(train_rows), fraction, seed)]
    if not len(queries):
        raise ValueError(f"{what}: no held-out training images (validation_fraction {fraction})")
    return queries, np.flatnonzero(descriptors.database)


def held_out_map(distances: np.ndarray, labels: np.ndarray, queries: np.ndarray, database: np.ndarray, k: int) -> dict:
    """Validation mAP@k (%) of the held-out queries' ``distances`` to the database (one row per
    query), with the number of failed queries. A held-out image that is also a database image
    must not find itself: it goes last, irrelevant (``distances`` is changed in place)."""
    relevant = relevance_from_labels(labels[queries], labels[database])
    is_self = queries[:, None] == database[None, :]
    distances[is_self], relevant[is_self] = np.inf if distances.dtype.kind == "f" else distances.max() + 1, False
    ap = evaluate_distances(distances, relevant, k=k)["ap"]
    return {"queries": len(queries), "val_map": 100 * ap.mean(), "failed": int((ap < 0.5).sum())}


def validation_map(codes_path, fraction: float, seed: int, k: int, reference=None, n_neighbours: int = 50) -> dict:
    """Validation mAP@k (%) of one descriptor file of binary codes and, given ``reference``
    (:func:`cbir.evaluation.reference_space` of the features they were learned from), the
    tie-aware precision@``n_neighbours`` (%) on the neighbours ground truth."""
    codes = read_descriptors(codes_path)
    if not codes.is_binary:
        raise ValueError(f"{codes_path} holds features, not binary codes")
    queries, database = held_out_rows(codes, fraction, seed, codes_path)
    distances = pairwise_hamming(codes.values[queries], codes.values[database], codes.n_bits)
    labels = codes.targets() if codes.is_multilabel else codes.label  # multi-label: relevant when sharing a label
    scores = held_out_map(distances, labels, queries, database, k)
    if reference is not None:
        if not np.array_equal(reference.image_id, codes.image_id):
            raise ValueError(f"{codes_path} and its reference features list other images")
        neighbours = _neighbours_without_self(reference.values, queries, database, n_neighbours)
        scores["val_p@K"] = 100 * tie_aware_precision_at_k(distances, neighbours, [n_neighbours])[:, 0].mean()
    return scores


def print_recipe_summary(rows: list[dict], k: int, seconds: str, label: str, by=("dataset", "method", "recipe", "bits")) -> None:
    """The recipe searches' table: validation mAP mean ± sd over seeds and the mean of the
    ``seconds`` column (shown as ``label``), per ``by`` (dataset, method, recipe and code length)."""
    table = pd.DataFrame(rows).groupby(list(by), sort=False)
    summary = pd.concat([table["val_map"].agg(["mean", "std"]).add_prefix("val mAP "), table[seconds].mean().rename(label)], axis=1)
    print(f"\nvalidation mAP@{k} (%), mean ± sd over seeds")
    print(summary.round(2).to_string())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", required=True)
    parser.add_argument("--results", help="the run's results folder (default: the config's results_dir)")
    parser.add_argument("--methods", nargs="+", help="hashing methods (default: the config's)")
    parser.add_argument("--neighbours", action="store_true", help="also score the neighbours ground truth (tie-aware precision@K)")
    args = parser.parse_args(argv)

    config = load_config(args.configfile)
    layout = Layout(args.results or config["results_dir"], config["report_dir"])
    k, n_neighbours = config["evaluation"]["topk"], config["evaluation"]["neighbours"]
    rows = []
    line = "{dataset:<16} {backbone:<12} {method:<8} {bits:>4} {seed:>4} {queries:>7} {val_map:>7} {failed:>6}" + (" {val_p@K:>8}" if args.neighbours else "")
    print(line.format(**{"dataset": "dataset", "backbone": "backbone", "method": "method", "bits": "bits", "seed": "seed", "queries": "queries", "val_map": "val mAP", "failed": "failed", "val_p@K": "val P@K"}))
    for dataset, cfg in config["datasets"].items():
        for backbone in cfg["hashing"]:
            references = {}  # seed -> the features' space, read once
            for method in args.methods or config["hashing"]["methods"]:
                fraction = held_out_fraction(config, backbone, method)
                for bits in config["hashing"]["bits"]:
                    for seed in config["seeds"]:
                        path = layout.hashing(dataset, seed, backbone, method, bits, "descriptors.parquet")
                        if not os.path.exists(path):  # a run in progress, or a subset of it
                            print(f"missing: {path}", flush=True)
                            continue
                        if args.neighbours and seed not in references:
                            features = layout.features(dataset, seed, backbone, "finetuned", config["backbones"][backbone]["feature_layer"])
                            references[seed] = reference_space(features, config["hashing"]["preprocess"])
                        reference = references.get(seed)
                        row = {"dataset": dataset, "backbone": backbone, "method": method, "bits": bits, "seed": seed, **validation_map(path, fraction, seed, k, reference, n_neighbours)}
                        rows.append(row)
                        print(line.format(**{**row, "val_map": f"{row['val_map']:.2f}", "val_p@K": f"{row.get('val_p@K', float('nan')):.2f}"}), flush=True)
    if not rows:
        raise SystemExit(f"no hash codes found under {layout.results}")
    table = pd.DataFrame(rows).groupby(["dataset", "backbone", "method", "bits"], sort=False)
    scores = ["val_map", *(["val_p@K"] if args.neighbours else [])]
    summary = pd.concat([table[score].agg(["mean", "std"]).add_prefix(f"{score} ") for score in scores] + [table["failed"].mean().rename("failed (mean)")], axis=1)
    print(f"\nvalidation mAP@{k}" + (f" and tie-aware precision@{n_neighbours} on Euclidean neighbours" if args.neighbours else "") + f" (%), mean ± sd over seeds {config['seeds']}")
    print(summary.to_string(float_format="{:.2f}".format))


if __name__ == "__main__":
    main()
