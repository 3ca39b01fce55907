"""One run at a time per results folder.

Snakemake's own lock is taken after it has looked for incomplete files, so a second run started
beside a first one is told, depending on timing, that the first run's unfinished outputs are
"incomplete" and to use ``--rerun-incomplete``, advice that would let it overwrite them. The
workflow therefore holds a lock of its own (an advisory ``flock`` on ``<results>/.lock``, which
the kernel releases when the process ends, however it ends): taken when a run starts executing
jobs, and checked, before anything else, by every later invocation on the same results.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from pathlib import Path


class RunLocked(RuntimeError):
    """Another run holds the results folder."""


_held: dict[str, object] = {}  # lock path -> its open file, kept for the life of the process


def _holder(handle) -> str:
    handle.seek(0)
    try:
        info = json.loads(handle.read() or "{}")
    except json.JSONDecodeError:
        info = {}
    if not isinstance(info, dict):
        info = {}
    return f"pid {info.get('pid', '?')}, started {info.get('started', '?')}: {info.get('command', '?')}"


def _refusal(path: Path, results: str, holder: str) -> RunLocked:
    return RunLocked(
        f"another snakemake run is writing to {results}/ and holds its lock {path} ({holder}). "
        "Wait for it to finish, or stop it (a stopped run releases the lock by itself); "
        "do not use --unlock or --rerun-incomplete while it runs: they would let this run overwrite its outputs."
    )


def check_free(path: str | os.PathLike, results: str) -> None:
    """Raise :class:`RunLocked` if another process holds the lock at ``path``; take nothing."""
    path = Path(path)
    if str(path) in _held or not path.is_file():
        return
    with open(path, "r") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _refusal(path, results, _holder(handle)) from None


def hold(path: str | os.PathLike, results: str) -> None:
    """Take the lock at ``path`` for the rest of this process, recording who holds it; raise
    :class:`RunLocked` if another process has it."""
    path = Path(path)
    if str(path) in _held:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        refusal = _refusal(path, results, _holder(handle))
        handle.close()
        raise refusal from None
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(["snakemake", *sys.argv[1:]])}))
    handle.flush()
    _held[str(path)] = handle
