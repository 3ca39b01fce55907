"""``cbir``: command-line access to what the pipeline built, and to the published numbers.

    cbir models                                   # the indexes of the config, and which are built
    cbir search photo.jpg more/ -k 10             # nearest database images of each query image
    cbir search q.png --model metric/alexnet/TN-FT --output hits.csv --sheet hits.png
    cbir serve                                    # a search page in the browser, http://127.0.0.1:8000
    cbir compare results/report/default/results.tsv   # your run against the published numbers
    cbir publish --configfile config.yaml         # (maintainers) publish a finished run's numbers
    cbir readme [--check]                         # (maintainers) README tables from published files

Run it in the workflow's directory (or pass ``--directory``) with the config the pipeline ran
with (``--configfile``, default ``config.yaml``). Files named on the command line are relative to
where you call it from.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from pathlib import Path

from cbir.config import ConfigError, load_config


def _expand(inputs: list[Path]) -> list[Path]:
    """Files as given; folders replaced by the files under them, sorted."""
    paths = []
    for item in inputs:
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
    from cbir.paths import Layout
    from cbir.query import available

    paths = Layout.of(config)
    for dataset, descriptor in available(config):
        built = [seed for seed in config["seeds"] if Path(paths.descriptor(dataset, seed, descriptor)).is_file()]
        state = f"built (seeds {', '.join(map(str, built))})" if built else "not built"
        print(f"{dataset}\t{descriptor}\t{state}")
    return 0


def _warn_if_stale(config: dict) -> None:
    """Say so when the report was made under another configuration than the one given."""
    from cbir.paths import Layout
    from cbir.provenance import config_hash

    from cbir.io import read_json

    record = Path(Layout.of(config).report("provenance.json"))
    if record.is_file():
        try:
            built = read_json(record, "provenance record")
            built = built.get("config_sha256") if isinstance(built, dict) else None
        except ValueError as err:
            print(f"cbir: warning: cannot tell whether the index is current: {err}", file=sys.stderr)
            return
        if built and built != config_hash(config):
            print(f"cbir: warning: {record} was written under another configuration (sha256 {built[:12]}, this one {config_hash(config)[:12]}); "
                  "if the change concerns this index, run snakemake first to rebuild it", file=sys.stderr)


def _search(config: dict, args) -> int:
    from cbir.query import SearchEngine

    datasets = list(config["datasets"])
    if args.dataset is not None and args.dataset not in datasets:
        print(f"cbir: unknown dataset {args.dataset!r}; the config defines {', '.join(datasets)}", file=sys.stderr)
        return 2
    if args.dataset is None and len(datasets) > 1:
        print(f"cbir: the config has several datasets ({', '.join(datasets)}); choose one with --dataset", file=sys.stderr)
        return 2
    dataset = args.dataset or datasets[0]
    output = args.output
    if output is not None:
        if not output.parent.is_dir():
            print(f"cbir: cannot write {output}: no directory {output.parent}", file=sys.stderr)
            return 2
        if output.exists() and not args.force:
            print(f"cbir: {output} exists; pass --force to overwrite it", file=sys.stderr)
            return 2
    _warn_if_stale(config)
    model = args.model or _default_model(config, dataset)
    engine = SearchEngine(config, dataset, model, seed=args.seed)  # a missing or damaged index: main's one line
    paths = _expand(args.images)
    missing = [p for p in paths if not p.exists()]
    results, errors = engine.search([p for p in paths if p.exists()], args.k)
    for path in missing:
        print(f"cbir: skipped {path}: no such file", file=sys.stderr)
    for error in errors:
        print(f"cbir: skipped {error.path}: not a readable image ({error.reason})", file=sys.stderr)
    if output is not None:
        from cbir.io import write_parquet, write_text

        if output.suffix == ".parquet":
            write_parquet(results, output)
        else:
            write_text(results.to_csv(index=False), output)
    else:
        print(results.to_string(index=False) if len(results) else "(no results)")
    if args.sheet and len(results):
        engine.contact_sheet(results, args.sheet)
    searched = results["query"].nunique() if len(results) else 0
    print(f"cbir: {searched} of {len(paths)} queries searched with {dataset} · {model} (seed {engine.seed})", file=sys.stderr)
    return 0 if searched else 1


def _published_name(configfile: Path) -> str:
    return "default" if configfile.name == "config.yaml" else configfile.stem


def _publish(config: dict, args) -> int:
    from cbir.paths import Layout
    from cbir.publish import publish

    target = publish(Layout.of(config).report_dir, args.name or _published_name(args.configfile), args.to or Path("resources/results"))
    print(f"cbir: published {target}/results.tsv and provenance.json; `cbir readme` renders the README's tables from them", file=sys.stderr)
    return 0


def _readme(args) -> int:
    from cbir.publish import update_readme

    stale = 0
    for page in args.readme:
        current = update_readme(page, args.published, check=args.check)
        stale += not current
        if args.check:
            print(f"cbir: {page} {'matches' if current else 'does not match'} the published results", file=sys.stderr)
        else:
            print(f"cbir: {page} {'was already current' if current else 'updated'}", file=sys.stderr)
    return 1 if args.check and stale else 0


def _compare(args) -> int:
    from cbir.publish import compare, format_comparison

    yours = args.yours / "results.tsv" if args.yours.is_dir() else args.yours
    published = args.published / "results.tsv" if args.published.is_dir() else args.published
    for path in (yours, published):
        if not path.is_file():
            print(f"cbir: no results file {path}", file=sys.stderr)
            return 2
    from cbir.io import read_json

    table = compare(yours, published, all_metrics=args.all)
    records = [read_json(p, "provenance record") if p.is_file() else None for p in (published.parent / "provenance.json", yours.parent / "provenance.json")]
    print(format_comparison(table, records[0], records[1]))
    return 1 if table["outside"].any() else 0


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--configfile", type=Path, help="the config the pipeline ran with (default: config.yaml of --directory)")
    parser.add_argument("--directory", "-d", type=Path, help="the workflow's working directory (default: .)")
    parser.add_argument("--verbose", "-v", action="store_true", help="log progress to stderr")
    parser.add_argument("--debug", action="store_true", help="on an error, show the traceback instead of one line")


def main(argv: list[str] | None = None) -> int:
    """The command line: every failure is one line on stderr (``--debug``: the traceback) and
    exit status 2."""
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("cbir: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 -- the last line of defence: one line, not a traceback
        if debug:
            raise
        message = " ".join(str(err).split()) or err.__class__.__name__
        print(f"cbir: {message if isinstance(err, (OSError, ValueError, ConfigError)) else f'{err.__class__.__name__}: {message}'} (--debug shows the traceback)", file=sys.stderr)
        return 2


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cbir", description="Search what the cbir pipeline indexed; check numbers against the published ones.")
    _common_options(parser)
    parser.set_defaults(directory=Path("."))
    # The same options after the command (`cbir publish --configfile X`); SUPPRESS keeps the value
    # given before the command, or its default, where they are not repeated.
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    _common_options(common)
    commands = parser.add_subparsers(dest="command", required=True)
    add_command = functools.partial(commands.add_parser, parents=[common])
    add_command("models", help="list the indexes the config defines and whether they are built")
    search = add_command("search", help="find the database images nearest to query images")
    search.add_argument("images", nargs="+", type=Path, help="image files or folders of images")
    search.add_argument("--dataset", help="the indexed dataset (default: the config's only one)")
    search.add_argument("--model", help="hashing/<backbone>/<method>/<bits>, metric/<backbone>/<model> or features/...; see `cbir models` (default: BA at the longest code)")
    search.add_argument("--seed", type=int, help="which repeat's index (default: the config's first seed)")
    search.add_argument("-k", type=int, default=10, help="results per query (default: 10)")
    search.add_argument("--output", "-o", type=Path, help="write the results to a .csv or .parquet file instead of printing them")
    search.add_argument("--force", action="store_true", help="overwrite --output if it exists")
    search.add_argument("--sheet", type=Path, help="also draw a contact sheet PNG: each query and its results")
    serve = add_command("serve", help="a local search page over the built indexes, in a browser")
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="default: 8000")
    serve.add_argument("--max-upload-mb", type=float, default=10, help="largest image accepted for upload (default: 10 MiB)")
    compare = add_command("compare", help="hold a run's results.tsv against the published numbers")
    compare.add_argument("yours", type=Path, help="your run's results.tsv (or the report folder holding it)")
    compare.add_argument("published", type=Path, nargs="?", help="published results (default: resources/results/<name of --configfile>)")
    compare.add_argument("--all", action="store_true", help="judge every metric, not only the tables' headline numbers")
    publish = add_command("publish", help="copy the config's finished results.tsv and provenance into resources/results/<name>")
    publish.add_argument("--name", help="default: `default` for config.yaml, else the config file's stem")
    publish.add_argument("--to", type=Path, help="default: resources/results")
    readme = add_command("readme", help="render the result tables of README.md and docs/results.md from resources/results")
    readme.add_argument("--check", action="store_true", help="only check that the pages match (exit 1 if not)")
    readme.add_argument("--readme", type=Path, action="append", help="a page to render (repeatable; default: README.md and docs/results.md)")
    readme.add_argument("--published", type=Path, help="default: resources/results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if args.command == "search" and args.k < 1:
        parser.error("-k must be at least 1")
    # Paths given by the caller are relative to the caller's directory, not --directory.
    for name in ("configfile", "images", "output", "sheet", "yours", "to", "readme", "published"):
        value = getattr(args, name, None)
        if isinstance(value, Path):
            setattr(args, name, value.absolute())
        elif isinstance(value, list):
            setattr(args, name, [v.absolute() for v in value])
    # Defaults are relative to the workflow's directory.
    if not args.directory.is_dir():
        print(f"cbir: no directory {args.directory}", file=sys.stderr)
        return 2
    os.chdir(args.directory)
    args.configfile = args.configfile or Path("config.yaml").absolute()
    if args.command == "compare":
        args.published = args.published or Path("resources/results") / _published_name(args.configfile)
        return _compare(args)
    if args.command == "readme":
        args.readme, args.published = args.readme or [Path("README.md"), Path("docs/results.md")], args.published or Path("resources/results")
        return _readme(args)
    try:
        config = load_config(args.configfile)
    except ConfigError as err:
        print(f"cbir: {err}", file=sys.stderr)
        return 2
    if args.command == "models":
        return _models(config)
    if args.command == "publish":
        return _publish(config, args)
    if args.command == "serve":
        from cbir.web.server import serve

        serve(config, args.host, args.port, int(args.max_upload_mb * 2**20))
        return 0
    return _search(config, args)


if __name__ == "__main__":
    sys.exit(main())
