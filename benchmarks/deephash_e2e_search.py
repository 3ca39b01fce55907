"""End-to-end deep hashing recipes on the held-out validation images: validation mAP@k per method,
recipe, code length and seed, and its mean ± sd over seeds.

    uv run python benchmarks/deephash_e2e_search.py --configfile config/mnist-deep.yaml \\
        --results ../bench-mnist/repeat0/results --methods dpsh dsh --seeds 0 \\
        --recipes '{}' '{"finetune": {"lr": 0.05}}' '{"options": {"margin": 1.0}}' --jobs 2

Reads a finished run's split, manifest and (for ``start: finetuned``) fine-tuned backbones
(``--results``, default the config's ``results_dir``; the manifests and image caches are read
relative to the folder above it, the run's working directory). Each recipe (changes to the
method's ``finetune`` section, and ``options`` for the loss) trains every code length on one trunk
exactly as the workflow's ``train_deep_hash_joint`` does (:func:`cbir.deephash.core.train_end_to_end`,
which holds the backbone's validation images out of training), and the held-out images are ranked
against the database as in ``benchmarks/validation_map.py``. Never touches the test queries.
``--jobs 2`` trains two recipes side by side (one thread each, as the workflow does on 2 cores).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from cbir.config import input_mode, load_config, pixels_are_cache
from cbir.deephash.core import outputs_by_length, train_end_to_end
from cbir.paths import Layout

from validation_map import held_out_fraction, print_recipe_summary, validation_map


def _merged(section: dict, recipe: dict) -> dict:
    """The method's section with the recipe's ``finetune`` changes and loss ``options`` applied."""
    merged = {**section, **recipe.get("options", {})}
    merged["finetune"] = {**section.get("finetune", {}), **recipe.get("finetune", {})}
    return merged


def _train_and_score(task: dict) -> list[dict]:
    torch.set_num_threads(1)
    with contextlib.chdir(task["workdir"]):  # the run's manifests and caches are relative to it
        return _scores(task)


def _scores(task: dict) -> list[dict]:
    config, layout = task["config"], Layout(task["results"], task["config"]["report_dir"])
    dataset, seed, backbone, method = task["dataset"], task["seed"], task["backbone"], task["method"]
    section = _merged(config["hashing"][method], task["recipe"])
    bits = config["hashing"]["bits"]
    backbone_cfg = config["backbones"][backbone]
    weights = layout.backbone(dataset, seed, backbone) if section["start"] == "finetuned" else None
    protocol = config["datasets"][dataset]["protocol"]
    kind, mode, size = config["datasets"][dataset]["kind"], input_mode(backbone_cfg["arch"], config["datasets"][dataset]["kind"]), backbone_cfg["input_size"]
    cache = None if pixels_are_cache(kind, mode, size) else layout.image_cache(dataset, mode, size)
    with tempfile.TemporaryDirectory() as scratch:
        outputs = outputs_by_length(bits, *([str(Path(scratch) / f"{b}.{name}") for b in bits] for name in ("pt", "parquet", "history.parquet")))
        started = time.perf_counter()
        train_end_to_end(layout.manifest(dataset), layout.split(dataset, seed, protocol), backbone_cfg, method, section, kind, seed, outputs, weights_path=weights, image_cache=cache)
        seconds = time.perf_counter() - started
        fraction = held_out_fraction({**config, "hashing": {**config["hashing"], method: section}}, backbone, method)
        rows = []
        for b in bits:
            score = validation_map(outputs[b]["codes"], fraction, seed, config["evaluation"]["topk"])
            rows.append({"dataset": dataset, "method": method, "recipe": json.dumps(task["recipe"]), "bits": b, "seed": seed, "val_map": score["val_map"], "train_s": seconds})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", required=True)
    parser.add_argument("--results", help="the run's results folder (default: the config's results_dir)")
    parser.add_argument("--methods", nargs="+", required=True, help="deep hashing methods (end to end)")
    parser.add_argument("--recipes", nargs="+", type=json.loads, default=[{}], help="JSON: 'finetune' changes, and 'options' for the loss")
    parser.add_argument("--seeds", nargs="+", type=int, help="seeds (default: the config's)")
    parser.add_argument("--jobs", type=int, default=1, help="trainings side by side, one thread each")
    args = parser.parse_args(argv)

    config = load_config(args.configfile)
    results = Path(args.results or config["results_dir"]).resolve()
    workdir = results.parent
    tasks = []
    for dataset, cfg in config["datasets"].items():
        for backbone in cfg["hashing"]:
            for seed in args.seeds or config["seeds"]:
                for method in args.methods:
                    for recipe in args.recipes:
                        tasks.append({"config": config, "results": str(results), "workdir": str(workdir), "dataset": dataset, "backbone": backbone, "seed": seed, "method": method, "recipe": recipe})
    rows = []
    with ProcessPoolExecutor(max_workers=args.jobs) if args.jobs > 1 else contextlib.nullcontext() as pool:
        for task_rows in (pool.map if pool else map)(_train_and_score, tasks):
            for row in task_rows:
                print(f"{row['dataset']:<14} {row['method']:<11} {row['recipe']:<44} {row['bits']:>3} {row['seed']:>3}  val mAP {row['val_map']:6.2f}  train {row['train_s']:5.0f} s", flush=True)
            rows.extend(task_rows)
    print_recipe_summary(rows, config["evaluation"]["topk"], "train_s", "train s")


if __name__ == "__main__":
    main()
