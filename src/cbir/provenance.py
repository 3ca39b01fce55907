"""Where a number came from: code version, configuration, software versions, machine, time.

Floating-point results of training differ between CPUs (AVX2 and AVX-512 kernels round
differently) and between library versions, so every metrics file and report carries this
record, and ``cbir compare`` shows it beside the numbers it compares.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

#: The packages whose versions change numbers.
PACKAGES = ("torch", "torchvision", "numpy", "scikit-learn", "faiss-cpu", "pandas", "pyarrow", "snakemake")
#: CPU flags that select different floating-point kernels.
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "asimd", "sve")
REPO = Path(__file__).resolve().parents[2]
METADATA_KEY = b"cbir.provenance"
#: A copy of the tree without its .git (rsynced to a cluster node or a rented GPU machine) names
#: the commit it was copied from here; the record then says it was not checked for changes.
COMMIT_VARIABLE = "CBIR_SOURCE_COMMIT"


def config_hash(config: dict) -> str:
    """SHA-256 of the effective (validated, key-sorted) configuration."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def _git(*args) -> str | None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        return None
    result = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def cpu() -> dict:
    """The CPU's model name and the floating-point ISA flags it has (Linux; else the platform)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model") and model in (platform.processor(), platform.machine()):
                model = value.strip()
            elif key in ("flags", "Features"):
                flags.update(value.split())
    except OSError:
        pass
    return {"model": model, "isa": [flag for flag in ISA_FLAGS if flag in flags], "machine": platform.machine()}


def gpus() -> list[str]:
    """Names of the NVIDIA GPUs the driver shows (without importing torch)."""
    if shutil.which("nvidia-smi") is None:
        return []
    result = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
    return [line.strip() for line in result.stdout.splitlines() if line.strip()] if result.returncode == 0 else []


def provenance(config: dict | None = None) -> dict:
    """This process's record: commit (and whether the tree was dirty), versions, device, time;
    with ``config``, also its hash and seeds."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    commit = _git("rev-parse", "HEAD")
    record = {
        "commit": commit or os.environ.get(COMMIT_VARIABLE) or None,
        "dirty": None if status is None else bool(status),
        "python": platform.python_version(),
        "versions": {package: _version(package) for package in PACKAGES},
        "cpu": cpu(),
        "gpus": gpus(),
        "host": platform.node(),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if config is not None:
        record["config_sha256"] = config_hash(config)
        record["seeds"] = list(config["seeds"])
        record["evaluation"] = config["evaluation"]
    return record


def describe(record: dict) -> str:
    """One line for a table's foot: commit, device, versions, time."""
    commit = (record.get("commit") or "unknown commit")[:10] + (" (dirty)" if record.get("dirty") else " (copied tree, unchecked)" if record.get("commit") and record.get("dirty") is None else "")
    device = ", ".join(record.get("gpus") or []) or record["cpu"]["model"]
    isa = "/".join(f for f in record["cpu"]["isa"] if f.startswith(("avx", "amx", "asimd", "sve")))
    versions = ", ".join(f"{p} {v}" for p, v in record["versions"].items() if v and p in ("torch", "numpy", "faiss-cpu", "scikit-learn"))
    seeds = f"seeds {', '.join(map(str, record['seeds']))}; " if "seeds" in record else ""
    return f"{seeds}commit {commit}; {device} ({isa or 'no AVX'}); Python {record['python']}, {versions}; {record['time']}"
