"""Head-only deep hashing recipes on the held-out validation images: validation mAP@k per method,
recipe, code length and seed, and its mean ± sd over seeds.

    uv run python benchmarks/deephash_head_search.py --configfile config/mnist.yaml \\
        --methods dpsh hashnet dsh greedyhash csq --bits 12 48 --seeds 0 1 \\
        --recipes '{"epochs": 30, "lr": 0.01}' '{"epochs": 10, "lr": 0.05}'

Reads a finished run's fine-tuned features (``--results``, default the config's ``results_dir``);
each recipe (changes to the method's ``head_only`` section, and ``options`` for the loss) trains
the hash layer exactly as the workflow's ``<method>_head`` does (:func:`cbir.deephash.core.fit_heads`
on the training rows less the backbone's held-out validation images), and the held-out images are
ranked against the database as in ``benchmarks/validation_map.py``. Never touches the test queries.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from cbir.config import load_config
from cbir.deephash import make_loss
from cbir.deephash.core import codes_of, fit_heads, head_outputs, loss_options
from cbir.features import validation_mask
from cbir.io import read_descriptors, write_descriptors
from cbir.paths import Layout

from validation_map import print_recipe_summary, validation_map


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", required=True)
    parser.add_argument("--results", help="the run's results folder (default: the config's results_dir)")
    parser.add_argument("--methods", nargs="+", required=True, help="deep hashing methods (their head-only training)")
    parser.add_argument("--recipes", nargs="+", type=json.loads, default=[{}], help="JSON: head_only changes, and 'options' for the loss")
    parser.add_argument("--bits", nargs="+", type=int, help="code lengths (default: the config's)")
    parser.add_argument("--seeds", nargs="+", type=int, help="seeds (default: the config's)")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    config = load_config(args.configfile)
    layout = Layout(args.results or config["results_dir"], config["report_dir"])
    k, rows = config["evaluation"]["topk"], []
    with tempfile.TemporaryDirectory() as scratch:
        for dataset, cfg in config["datasets"].items():
            for backbone in cfg["hashing"]:
                fraction = config["backbones"][backbone]["finetune"]["validation_fraction"]
                for seed in args.seeds or config["seeds"]:
                    features = read_descriptors(layout.features(dataset, seed, backbone, "finetuned", config["backbones"][backbone]["feature_layer"]))
                    train = features.subset("train")
                    train = train.subset_rows(~validation_mask(len(train), fraction, seed))
                    n_classes = features.targets().shape[1]
                    for method in args.methods:
                        section = config["hashing"][method]
                        for recipe in args.recipes:
                            options = {**loss_options(section), **recipe.get("options", {})}
                            training = {**section["head_only"], **{key: v for key, v in recipe.items() if key != "options"}}
                            for bits in args.bits or config["hashing"]["bits"]:
                                started = time.perf_counter()
                                [(head, _)] = fit_heads(train.values, train.targets(n_classes), [make_loss(method, bits, n_classes, seed, **options)], training, seed)
                                seconds = time.perf_counter() - started
                                codes_path = Path(scratch) / "codes.parquet"
                                write_descriptors(codes_path, features.index_frame(), codes_of(head_outputs(head, features.values)), n_bits=bits)
                                score = validation_map(codes_path, fraction, seed, k)
                                row = {"dataset": dataset, "method": method, "recipe": json.dumps(recipe), "bits": bits, "seed": seed, "val_map": score["val_map"], "fit_s": seconds}
                                rows.append(row)
                                print(f"{dataset:<14} {method:<11} {row['recipe']:<40} {bits:>3} {seed:>3}  val mAP {row['val_map']:6.2f}  fit {seconds:5.1f} s", flush=True)
    print_recipe_summary(rows, k, "fit_s", "fit s")


if __name__ == "__main__":
    main()
