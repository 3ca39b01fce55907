"""How long the workflow takes from the first command: cold run, no-op rerun, and a rerun after
one hashing parameter changes, in a scratch directory.

    uv run python benchmarks/bench_workflow.py --repeats 2         # the embedded default, twice
    uv run python benchmarks/bench_workflow.py --configfile config/mnist.yaml --cores 2

Prints, per run: wall time, jobs run, the jobs' summed time (from their benchmark files) and the
slowest five jobs; and the machine it ran on. Measure on a quiet machine: the jobs are short, and
other work on the cores shows directly in their times.
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

from cbir.provenance import cpu  # noqa: E402


def run(workdir: Path, configfile: Path, cores: str) -> tuple[float, int, str]:
    """One snakemake invocation: (wall seconds, jobs run, its output)."""
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile", str(configfile), "--cores", cores]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode:
        raise SystemExit(f"snakemake failed:\n{result.stderr[-4000:]}")
    done = re.findall(r"(\d+) of (\d+) steps \(100%\) done", result.stderr)
    return wall, int(done[-1][1]) - 1 if done else 0, result.stderr  # minus the target rule `all`


def job_times(workdir: Path, since: float) -> pd.DataFrame:
    """Benchmark files written after ``since``: one row per job with its seconds."""
    rows = []
    for path in workdir.glob("**/logs/benchmarks/**/*.tsv"):
        if path.stat().st_mtime >= since:
            rows.append({"job": str(path.relative_to(workdir)).split("benchmarks/", 1)[1][:-4], "seconds": float(pd.read_csv(path, sep="\t")["s"].iloc[0])})
    return pd.DataFrame(rows, columns=["job", "seconds"]).astype({"seconds": float})


def mean_sd(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configfile", type=Path, default=REPO / "config.yaml")
    parser.add_argument("--cores", default="all")
    parser.add_argument("--repeats", type=int, default=1, help="repeat the three runs in fresh directories (mean ± sd)")
    parser.add_argument("--workdir", type=Path, help="scratch directory (default: a new temporary one)")
    args = parser.parse_args()
    info = cpu()
    print(f"machine: {info['model']} ({os.cpu_count()} CPUs, {' '.join(info['isa'])}); --cores {args.cores}; "
          f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}; config {args.configfile}")
    config = yaml.safe_load(args.configfile.read_text())
    config.setdefault("hashing", {}).setdefault("ba", {})["max_iter"] = 7
    runs = {"cold run": args.configfile.absolute(), "no-op rerun": args.configfile.absolute(), "rerun after hashing.ba.max_iter: 7": None}
    measured: dict[str, list[tuple[float, int, float]]] = {name: [] for name in runs}
    for repeat in range(args.repeats):
        root = args.workdir or Path(tempfile.mkdtemp(prefix="cbir-bench-"))
        workdir = root / f"repeat{repeat}" if args.workdir else root
        workdir.mkdir(parents=True, exist_ok=True)
        changed = workdir / "changed.yaml"
        changed.write_text(yaml.safe_dump(config))
        print(f"\nrepeat {repeat + 1} of {args.repeats} in {workdir}")
        for name, configfile in runs.items():
            started = time.time()
            wall, jobs, _ = run(workdir, configfile or changed, args.cores)
            times = job_times(workdir, started)
            measured[name].append((wall, jobs, times["seconds"].sum()))
            print(f"  {name}: {wall:.1f} s wall, {jobs} jobs, summed job time {times['seconds'].sum():.1f} s; slowest:")
            for row in times.nlargest(5, "seconds").itertuples():
                print(f"      {row.seconds:7.1f} s  {row.job}")

    print(f"\n| run | wall (s) | jobs | summed job time (s) |\n| --- | ---: | ---: | ---: |")
    for name, rows in measured.items():
        walls, jobs, summed = zip(*rows)
        print(f"| {name} | {mean_sd(list(walls))} | {jobs[0]} | {mean_sd(list(summed))} |")
    print(f"(mean ± sd over {args.repeats} repeats)" if args.repeats > 1 else "(one repeat)")


if __name__ == "__main__":
    main()
