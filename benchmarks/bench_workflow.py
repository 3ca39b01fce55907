"""How long the workflow takes from the first command, and where the time goes.

    uv run python benchmarks/bench_workflow.py --repeats 2         # the embedded default, twice
    uv run python benchmarks/bench_workflow.py --configfile config/mnist.yaml --cold-only \
        --workdir ../bench-mnist                                   # the first paper's protocol

Runs, per repeat, in a scratch directory: a cold run (from an empty ``results/``), a no-op rerun
and a rerun after one hashing parameter changes (``--cold-only``: the cold run alone). The
datasets are decoded first, untimed, by a run that stops at their manifests: the cold run
starts from decoded datasets, as a user's second configuration does.

Prints, per run: wall time, jobs run and the jobs' summed time; then, from Snakemake's benchmark
files and its log, per rule the jobs, their summed, mean and longest time, and the longest chain
of dependent jobs (the wall time no number of cores could beat). The header names the machine.
Relative dataset roots (``../shared/datasets``) resolve against ``--workdir``: put it beside the
repository. Measure on a quiet machine: other work on the cores shows directly in the times.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from cbir.paths import Layout  # noqa: E402
from cbir.provenance import cpu  # noqa: E402


def snakemake(workdir: Path, configfile: Path, cores: str, *targets: str) -> tuple[float, str]:
    """One snakemake invocation: (wall seconds, its log)."""
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile", str(configfile), "--cores", cores, *targets]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode:
        raise SystemExit(f"snakemake failed:\n{result.stderr[-4000:]}")
    return wall, result.stderr


def jobs_of(log: str) -> list[dict]:
    """The jobs a snakemake log announces: rule, input and output files, benchmark file."""
    jobs, job = [], None
    for line in log.splitlines():
        if match := re.match(r"^(?:local)?(rule|checkpoint) (\S+):$", line):
            job = {"rule": match[2], "input": [], "output": [], "benchmark": None}
            jobs.append(job)
        elif job is not None and (match := re.match(r"^\s+(input|output|benchmark): (.*)$", line)):
            key, value = match[1], match[2]
            job[key] = value.strip() if key == "benchmark" else [v.strip() for v in value.split(",")]
        elif not line.startswith(" "):
            job = None
    return [j for j in jobs if j["rule"] != "all"]


def job_table(workdir: Path, log: str) -> pd.DataFrame:
    """One row per job run: rule, seconds (from its benchmark file) and the longest chain of
    jobs that ends with it (seconds, and the chain's rules)."""
    jobs = jobs_of(log)
    producer = {path: i for i, job in enumerate(jobs) for path in job["output"]}
    seconds = []
    for job in jobs:
        path = workdir / job["benchmark"] if job["benchmark"] else None
        seconds.append(float(pd.read_csv(path, sep="\t")["s"].iloc[0]) if path and path.is_file() else 0.0)
    chain: dict[int, tuple[float, list[int]]] = {}

    def longest(i: int) -> tuple[float, list[int]]:
        if i not in chain:
            before = [longest(producer[p]) for p in jobs[i]["input"] if p in producer and producer[p] != i]
            best = max(before, default=(0.0, []), key=lambda c: c[0])
            chain[i] = (best[0] + seconds[i], best[1] + [i])
        return chain[i]

    sys.setrecursionlimit(max(10000, 4 * len(jobs)))
    rows = []
    for i, job in enumerate(jobs):
        total, path = longest(i)
        rows.append({"rule": job["rule"], "seconds": seconds[i], "chain_seconds": total, "chain": " → ".join(f"{jobs[j]['rule']} ({seconds[j]:.0f} s)" for j in path)})
    return pd.DataFrame(rows, columns=["rule", "seconds", "chain_seconds", "chain"])


def rule_summary(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """Per rule over the repeats' cold runs: jobs, summed, mean and longest job seconds."""
    per_repeat = [t.groupby("rule")["seconds"].agg(jobs="count", summed="sum", mean="mean", longest="max") for t in tables]
    summary = pd.concat(per_repeat).groupby(level=0).mean()
    return summary.sort_values("summed", ascending=False)


def mean_sd(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def decode_datasets(workdir: Path, configfile: Path, cores: str) -> None:
    """Decode the configured datasets (untimed): the run stops at their manifests."""
    config = yaml.safe_load(configfile.read_text())
    targets = [Layout.manifest(name) for name in config["datasets"]]
    wall, _ = snakemake(workdir, configfile, cores, *targets)
    print(f"  datasets decoded (untimed): {wall:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configfile", type=Path, default=REPO / "config.yaml")
    parser.add_argument("--cores", default="all")
    parser.add_argument("--repeats", type=int, default=1, help="repeat the runs in fresh directories (mean ± sd)")
    parser.add_argument("--cold-only", action="store_true", help="only the cold run (skip the no-op rerun and the rerun after a change)")
    parser.add_argument("--workdir", type=Path, help="scratch directory (default: a new temporary one)")
    args = parser.parse_args()
    configfile = args.configfile.absolute()
    info = cpu()
    print(f"machine: {info['model']} ({os.cpu_count()} CPUs, {' '.join(info['isa'])}); --cores {args.cores}; "
          f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}; config {args.configfile}")
    config = yaml.safe_load(configfile.read_text())
    config.setdefault("hashing", {}).setdefault("ba", {})["max_iter"] = 7
    runs = {"cold run": configfile}
    if not args.cold_only:
        runs.update({"no-op rerun": configfile, "rerun after hashing.ba.max_iter: 7": None})
    measured: dict[str, list[tuple[float, int, float]]] = {name: [] for name in runs}
    cold_tables = []
    for repeat in range(args.repeats):
        root = args.workdir.absolute() if args.workdir else Path(tempfile.mkdtemp(prefix="cbir-bench-"))
        workdir = root / f"repeat{repeat}" if args.workdir else root
        workdir.mkdir(parents=True, exist_ok=True)
        changed = workdir / "changed.yaml"
        changed.write_text(yaml.safe_dump(config))
        print(f"\nrepeat {repeat + 1} of {args.repeats} in {workdir}")
        decode_datasets(workdir, configfile, args.cores)
        for name, run_config in runs.items():
            wall, log = snakemake(workdir, run_config or changed, args.cores)
            table = job_table(workdir, log)
            if name == "cold run":
                cold_tables.append(table)
            measured[name].append((wall, len(table), table["seconds"].sum()))
            print(f"  {name}: {wall:.1f} s wall, {len(table)} jobs, summed job time {table['seconds'].sum():.1f} s" + ("; slowest:" if len(table) else ""))
            for row in table.astype({"seconds": float}).nlargest(5, "seconds").itertuples():
                print(f"      {row.seconds:7.1f} s  {row.rule}")
        longest = cold_tables[-1].nlargest(1, "chain_seconds")
        if len(longest):
            print(f"  longest chain of the cold run: {longest['chain_seconds'].iloc[0]:.1f} s: {longest['chain'].iloc[0]}")

    print("\n| run | wall (s) | jobs | summed job time (s) |\n| --- | ---: | ---: | ---: |")
    for name, rows in measured.items():
        walls, jobs, summed = zip(*rows)
        print(f"| {name} | {mean_sd(list(walls))} | {jobs[0]} | {mean_sd(list(summed))} |")
    print(f"(mean ± sd over {args.repeats} repeats)" if args.repeats > 1 else "(one repeat)")
    print("\ncold run, per rule (seconds; mean over the repeats):\n\n| rule | jobs | summed | mean | longest |\n| --- | ---: | ---: | ---: | ---: |")
    for rule, row in rule_summary(cold_tables).iterrows():
        print(f"| {rule} | {row['jobs']:.0f} | {row['summed']:.1f} | {row['mean']:.1f} | {row['longest']:.1f} |")
    chains = [t["chain_seconds"].max() for t in cold_tables if len(t)]
    if chains:
        print(f"\nlongest chain of dependent jobs: {mean_sd(chains)} s")


if __name__ == "__main__":
    main()
