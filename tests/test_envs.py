"""envs/cbir.yaml (for `--sdm conda`) lists the same job dependencies as pyproject.toml."""

from __future__ import annotations

import re
import tomllib

import yaml

from conftest import REPO

# conda-forge names of PyPI packages where they differ.
CONDA_NAME = {"torch": "pytorch"}
# The workflow runner and the search page (`cbir serve`) run beside the jobs, not inside their environment.
RUNNER = {"snakemake", "snakemake-executor-plugin-slurm", "starlette", "uvicorn", "python-multipart"}


def _split(requirement: str) -> tuple[str, str]:
    match = re.match(r"^\s*([A-Za-z0-9_.-]+)\s*(.*)$", requirement)
    return match.group(1).lower(), match.group(2).replace(" ", "")


def test_conda_env_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {CONDA_NAME.get(name, name): spec for name, spec in map(_split, project["dependencies"]) if name not in RUNNER}
    env = yaml.safe_load((REPO / "envs" / "cbir.yaml").read_text())
    listed = dict(_split(dep) for dep in env["dependencies"] if isinstance(dep, str))
    python = listed.pop("python")
    assert python == ">=" + project["requires-python"].removeprefix(">=")
    assert listed == wanted

