"""Siamese/triplet recipes on the held-out validation images: validation mAP@k per model, recipe
and seed, and its mean ± sd over seeds.

    uv run python benchmarks/metric_learning_search.py --configfile config/mnist.yaml --seeds 0 1 \\
        --recipes '{}' '{"epochs": 5}' '{"epochs": 3}'

Reads a finished run's cached FC7 features and PT heads (``--results``, default the config's
``results_dir``); each recipe (changes to the config's ``metric_learning`` section) trains the
models exactly as the workflow's ``train_metric_models`` does (:func:`cbir.metric_learning.fit_models`),
on the training images less the held-out ones (the backbone's ``finetune.validation_fraction``,
seeded as fine-tuning holds them out), and ranks the held-out images against the database by the Euclidean distance of their
descriptors, as in ``benchmarks/validation_map.py``. Never touches the test queries.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from cbir.config import load_config
from cbir.features import validation_mask
from cbir.io import read_descriptors
from cbir.metric_learning import descriptors, fit_models, load_head
from cbir.paths import Layout
from cbir.search import pairwise_distances

from validation_map import held_out_map, held_out_rows, print_recipe_summary


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", required=True)
    parser.add_argument("--results", help="the run's results folder (default: the config's results_dir)")
    parser.add_argument("--recipes", nargs="+", type=json.loads, default=[{}], help="JSON: changes to metric_learning")
    parser.add_argument("--seeds", nargs="+", type=int, help="seeds (default: the config's)")
    parser.add_argument("--datasets", nargs="+", help="datasets (default: the config's)")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    config = load_config(args.configfile)
    layout = Layout(args.results or config["results_dir"], config["report_dir"])
    k, rows = config["evaluation"]["topk"], []
    defaults = {key: value for key, value in config["metric_learning"].items() if key != "models"}
    for dataset in args.datasets or list(config["datasets"]):
        for backbone in config["datasets"][dataset]["metric_learning"]:
            layer = config["backbones"][backbone]["feature_layer"]
            fraction = config["backbones"][backbone]["finetune"]["validation_fraction"]
            for seed in args.seeds or config["seeds"]:
                features = read_descriptors(layout.features(dataset, seed, backbone, "pretrained", layer))
                queries, database = held_out_rows(features, fraction, seed, dataset)
                train = features.subset("train")
                train = train.subset_rows(~validation_mask(len(train), fraction, seed))
                pt = layout.metric(dataset, seed, backbone, "PT", "head.pt")
                for recipe in args.recipes:
                    options = {**defaults, **recipe}
                    started = time.perf_counter()
                    for model, head, _ in fit_models(config["metric_learning"]["models"], train.values, train.label, options, seed, lambda: load_head(pt)):
                        seconds = time.perf_counter() - started
                        values = descriptors(head, features.values, options["normalize"])
                        distances = pairwise_distances(values[queries], values[database])
                        score = held_out_map(distances, features.label, queries, database, k)
                        row = {"dataset": dataset, "model": model, "recipe": json.dumps(recipe), "seed": seed, "val_map": score["val_map"], "fit_s": seconds}
                        rows.append(row)
                        print(f"{dataset:<14} {model:<9} {row['recipe']:<30} {seed:>3}  val mAP {row['val_map']:6.2f}  fit {seconds:5.1f} s", flush=True)
                        started = time.perf_counter()
    print_recipe_summary(rows, k, "fit_s", "fit s", by=("dataset", "model", "recipe"))


if __name__ == "__main__":
    main()
