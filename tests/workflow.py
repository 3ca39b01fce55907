"""Helpers to run the workflow in a scratch directory from tests."""

from __future__ import annotations

import collections
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def snakemake(workdir: Path, *args: str, configfile: Path | str = REPO / "config.yaml", check: bool = True) -> subprocess.CompletedProcess:
    """Run snakemake on the repository's Snakefile with ``workdir`` as working directory."""
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile", str(configfile), *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def job_counts(output: str) -> dict[str, int]:
    """Jobs per rule from the "Job stats" table that snakemake prints (empty: nothing to do)."""
    counts, in_table = {}, False
    for line in output.splitlines():
        fields = line.split()
        if line.startswith("Job stats"):
            in_table, counts = True, {}
        elif in_table and len(fields) == 2 and fields[1].isdigit():
            if fields[0] == "total":
                in_table = False
            else:
                counts[fields[0]] = int(fields[1])
    return counts


def jobs_run(output: str) -> dict[str, int]:
    """Jobs per rule that a (non-dry) run started, from its log: with checkpoints, the plan that
    a dry run prints leaves out the jobs planned after them."""
    return dict(collections.Counter(re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):$", output, re.M)))
