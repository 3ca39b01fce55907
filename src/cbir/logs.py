"""Logging for workflow jobs: progress goes to the rule's log file and to stderr."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def logged(path: str | Path | None, level: int = logging.INFO):
    """Send log records to ``path`` (and stderr) while the block runs; log a failure before re-raising.

    Every workflow script runs its work inside this block, so the rule's log file tells what
    happened, including the traceback of an error.
    """
    root = logging.getLogger()
    handlers = [logging.StreamHandler(sys.stderr)]
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path, mode="w"))
    for handler in handlers:
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
    old_level = root.level
    root.setLevel(level)
    logging.captureWarnings(True)
    try:
        yield logging.getLogger("cbir")
    except BaseException:
        logging.getLogger("cbir").exception("job failed")
        raise
    finally:
        logging.captureWarnings(False)
        root.setLevel(old_level)
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
