"""``cbir``: command-line access to what the pipeline built.

    cbir models                                   # the indexes of the config, and which are built
    cbir search photo.jpg more/ -k 10             # nearest database images of each query image
    cbir search q.png --model metric/alexnet/TN-FT --output hits.csv --sheet hits.png

Run it in the workflow's directory (or pass ``--directory``) with the config the pipeline ran
with (``--configfile``, default ``config.yaml``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from cbir.config import ConfigError, load_config


def _expand(inputs: list[str]) -> list[Path]:
    """Files as given; folders replaced by the files under them, sorted."""
    paths = []
    for item in map(Path, inputs):
        if item.is_dir():
            paths += sorted(p for p in item.rglob("*") if p.is_file())
        else:
            paths.append(item)
    return paths


def _default_model(config: dict, dataset: str) -> str:
    from cbir.query import available

    models = [d for ds, d in available(config) if ds == dataset]
    hashing = [m for m in models if m.startswith("hashing/") and "/ba/" in m]
    return max(hashing, key=lambda m: int(m.rsplit("/", 1)[1])) if hashing else models[0]


def _models(config: dict) -> int:
    from cbir.paths import descriptor_path
    from cbir.query import available

    for dataset, descriptor in available(config):
        built = Path(descriptor_path(config["results_dir"], dataset, descriptor)).is_file()
        print(f"{dataset}\t{descriptor}\t{'built' if built else 'not built'}")
    return 0


def _search(config: dict, args) -> int:
    from cbir.query import IndexNotFound, SearchEngine

    datasets = list(config["datasets"])
    dataset = args.dataset or datasets[0]
    if args.dataset is None and len(datasets) > 1:
        print(f"cbir: the config has several datasets ({', '.join(datasets)}); choose one with --dataset", file=sys.stderr)
        return 2
    model = args.model or _default_model(config, dataset)
    try:
        engine = SearchEngine(config, dataset, model)
    except (IndexNotFound, ValueError) as err:
        print(f"cbir: {err}", file=sys.stderr)
        return 2
    paths = _expand(args.images)
    missing = [p for p in paths if not p.exists()]
    results, errors = engine.search([p for p in paths if p.exists()], args.k)
    for path in missing:
        print(f"cbir: skipped {path}: no such file", file=sys.stderr)
    for error in errors:
        print(f"cbir: skipped {error.path}: not a readable image ({error.reason})", file=sys.stderr)
    if args.output:
        if args.output.endswith(".parquet"):
            results.to_parquet(args.output, index=False)
        else:
            results.to_csv(args.output, index=False)
    else:
        print(results.to_string(index=False) if len(results) else "(no results)")
    if args.sheet and len(results):
        engine.contact_sheet(results, args.sheet)
    searched = results["query"].nunique() if len(results) else 0
    print(f"cbir: {searched} of {len(paths)} queries searched with {dataset} · {model}", file=sys.stderr)
    return 0 if searched else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cbir", description="Search what the cbir pipeline indexed.")
    parser.add_argument("--configfile", default="config.yaml", help="the config the pipeline ran with (default: config.yaml)")
    parser.add_argument("--directory", "-d", default=".", help="the workflow's working directory (default: .)")
    parser.add_argument("--verbose", "-v", action="store_true", help="log progress to stderr")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("models", help="list the indexes the config defines and whether they are built")
    search = commands.add_parser("search", help="find the database images nearest to query images")
    search.add_argument("images", nargs="+", help="image files or folders of images")
    search.add_argument("--dataset", help="the indexed dataset (default: the config's only one)")
    search.add_argument("--model", help="hashing/<backbone>/<method>/<bits>, metric/<backbone>/<model> or features/...; see `cbir models` (default: BA at the longest code)")
    search.add_argument("-k", type=int, default=10, help="results per query (default: 10)")
    search.add_argument("--output", "-o", help="write the results to a .csv or .parquet file instead of printing them")
    search.add_argument("--sheet", help="also draw a contact sheet PNG: each query and its results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if args.command == "search" and args.k < 1:
        parser.error("-k must be at least 1")
    os.chdir(args.directory)
    try:
        config = load_config(args.configfile)
    except ConfigError as err:
        print(f"cbir: {err}", file=sys.stderr)
        return 2
    return _models(config) if args.command == "models" else _search(config, args)


if __name__ == "__main__":
    sys.exit(main())
