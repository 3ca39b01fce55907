"""Reading and writing cbir's files: atomic Parquet tables and descriptor files.

A *descriptor file* is a Parquet table with one row per image of a split, in the split's (seeded,
shuffled) order: ``image_id``, ``label``, the role flags ``train``, ``database`` and ``query``, and
either ``feature`` (float descriptors, a fixed-size list of float32) or ``code`` (packed binary
codes, fixed-size binary; the number of bits is kept in the schema metadata). Features from a
backbone, hash codes and metric-learning descriptors all use it, so the search and evaluation
stages read one format.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cbir.codes import n_bytes

ROLES = ("train", "database", "query")
_N_BITS_KEY = b"cbir.n_bits"


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike):
    """Yield a temporary sibling of ``path`` to write to; on success it replaces ``path``.

    Writing beside the target keeps the rename atomic (same file system), so a killed or failed
    job never leaves a half-written file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp creates the file private (0600); give it the mode any other new file gets.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def write_text(text: str, path: str | os.PathLike) -> None:
    """Write a text file atomically."""
    with atomic_output(path) as tmp:
        Path(tmp).write_text(text)


def write_table(frame: pd.DataFrame, path: str | os.PathLike, comments: list[str] = ()) -> None:
    """Write a tab-separated table atomically, after ``# `` comment lines (provenance);
    read it back with ``pandas.read_csv(path, sep="\t", comment="#")``."""
    header = "".join(f"# {line}\n" for line in comments)
    write_text(header + frame.to_csv(sep="\t", index=False), path)


def write_parquet(table: pa.Table | pd.DataFrame, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write a table to Parquet atomically; ``metadata`` values are stored as JSON in the schema
    (under ``cbir.<key>``) and read back by :func:`read_metadata`."""
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    if metadata:
        extra = {f"cbir.{key}".encode(): json.dumps(value, sort_keys=True).encode() for key, value in metadata.items()}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **extra})
    with atomic_output(path) as tmp:
        pq.write_table(table, tmp)


def read_metadata(path: str | os.PathLike) -> dict:
    """The ``metadata`` a Parquet file was written with by :func:`write_parquet`."""
    schema = pq.read_schema(path)
    return {key.decode()[5:]: json.loads(value) for key, value in (schema.metadata or {}).items() if key.startswith(b"cbir.") and key != _N_BITS_KEY}


def read_parquet(path: str | os.PathLike, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a Parquet table, naming the file when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing Parquet file: {path}")
    try:
        return pq.read_table(path, columns=columns).to_pandas()
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"cannot read Parquet file {path}: {err}") from err


@dataclass(frozen=True)
class Descriptors:
    """Descriptors of the images of a split, row-aligned with ``image_id``."""

    image_id: np.ndarray  # str
    label: np.ndarray  # int64
    train: np.ndarray  # bool
    database: np.ndarray  # bool
    query: np.ndarray  # bool
    values: np.ndarray  # float32 (N, D) features, or uint8 (N, ceil(n_bits / 8)) packed codes
    n_bits: int | None = None  # set for binary codes

    @property
    def is_binary(self) -> bool:
        return self.n_bits is not None

    def __len__(self) -> int:
        return len(self.image_id)

    def subset(self, role: str) -> "Descriptors":
        """The rows with the given role, in file order."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; expected one of {ROLES}")
        return self.subset_rows(getattr(self, role))

    def subset_rows(self, rows: np.ndarray) -> "Descriptors":
        """The rows selected by a boolean mask or an index array, in that order."""
        return replace(self, **{name: getattr(self, name)[rows] for name in ("image_id", "label", "train", "database", "query", "values")})

    def index_frame(self) -> pd.DataFrame:
        """The per-image columns without the descriptor values."""
        return pd.DataFrame(
            {"image_id": self.image_id, "label": self.label, "train": self.train, "database": self.database, "query": self.query}
        )


def write_descriptors(path: str | os.PathLike, index: pd.DataFrame, values: np.ndarray, n_bits: int | None = None) -> None:
    """Write descriptors for the rows of ``index`` (columns image_id, label, train, database, query).

    ``values`` is either a float (N, D) array, stored as float32 features, or, with ``n_bits``, a
    uint8 (N, ceil(n_bits / 8)) array of packed codes.
    """
    missing = [c for c in ("image_id", "label", *ROLES) if c not in index.columns]
    if missing:
        raise ValueError(f"index is missing columns {missing}")
    values = np.asarray(values)
    if values.ndim != 2 or len(values) != len(index):
        raise ValueError(f"values must be a 2-D array with {len(index)} rows, got shape {values.shape}")
    columns = {
        "image_id": pa.array(index["image_id"].astype(str).to_numpy(), pa.string()),
        "label": pa.array(index["label"].to_numpy(np.int64), pa.int64()),
        **{role: pa.array(index[role].to_numpy(bool), pa.bool_()) for role in ROLES},
    }
    metadata = {}
    if n_bits is None:
        flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).ravel(), pa.float32())
        columns["feature"] = pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
    else:
        if values.dtype != np.uint8 or values.shape[1] != n_bytes(n_bits):
            raise ValueError(f"{n_bits}-bit codes must be uint8 with {n_bytes(n_bits)} bytes per row")
        width = values.shape[1]
        buffer = pa.py_buffer(np.ascontiguousarray(values).tobytes())
        columns["code"] = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(values), [None, buffer])
        metadata[_N_BITS_KEY] = str(int(n_bits)).encode()
    table = pa.table(columns).replace_schema_metadata(metadata)
    write_parquet(table, path)


def read_descriptors(path: str | os.PathLike) -> Descriptors:
    """Read a file written by :func:`write_descriptors`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing descriptor file: {path}")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"cannot read descriptor file {path}: {err}") from err
    names = set(table.column_names)
    missing = {"image_id", "label", *ROLES} - names
    if missing or not ({"feature", "code"} & names):
        raise ValueError(f"{path} is not a descriptor file (missing columns {sorted(missing) or ['feature or code']})")
    metadata = table.schema.metadata or {}
    if "code" in names:
        n_bits = int(metadata[_N_BITS_KEY])
        column = table.column("code").combine_chunks()
        width = column.type.byte_width
        values = np.frombuffer(column.buffers()[1], dtype=np.uint8, count=len(column) * width).reshape(-1, width).copy()
    else:
        n_bits = None
        column = table.column("feature").combine_chunks()
        values = column.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        values = values.reshape(len(column), column.type.list_size)
    return Descriptors(
        image_id=table.column("image_id").to_numpy(zero_copy_only=False).astype(str),
        label=table.column("label").to_numpy(),
        train=table.column("train").to_numpy(zero_copy_only=False),
        database=table.column("database").to_numpy(zero_copy_only=False),
        query=table.column("query").to_numpy(zero_copy_only=False),
        values=values,
        n_bits=n_bits,
    )
