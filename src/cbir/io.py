"""Reading and writing cbir's files: atomic Parquet tables and descriptor files.

A *descriptor file* is a Parquet table with one row per image of a split, in the split's (seeded,
shuffled) order: ``image_id``, ``label``, the role flags ``train``, ``database`` and ``query``, and
either ``feature`` (float descriptors, a fixed-size list of float32) or ``code`` (packed binary
codes, fixed-size binary; the number of bits is kept in the schema metadata). Features from a
backbone, hash codes and metric-learning descriptors all use it, so the search and evaluation
stages read one format. Multi-label data add ``labels``, every class of the image (a list of
int64; ``label`` is then one of them), as the manifest and split do; :func:`multi_hot` turns
either form into 0/1 targets.

With sharded extraction, features are a *descriptor dataset*: a folder named like the file,
holding the shards' files (``part-NNNNN.parquet``: ``image_id``, ``label``, ``feature``, one per
shard, in manifest order) and ``_index.parquet``, the split's rows in split order with the part
and row of each image's features. :func:`read_descriptors` reads either form, the dataset one part
at a time; ``pyarrow.dataset.dataset(folder)`` reads the parts as one table (it skips ``_`` files).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
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


def read_json(path: str | os.PathLike, what: str = "JSON file"):
    """A JSON file's content; a missing file, bytes that are not UTF-8 or text that is not JSON
    is an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing {what}: {path}")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a readable {what}: {err}") from None


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


def _flat_label_sets(labels) -> tuple[np.ndarray, np.ndarray]:
    """(number of classes of each image, their classes one image after the other) of label sets."""
    lengths = np.fromiter(map(len, labels), np.int64, len(labels))
    flat = np.concatenate([np.asarray(x, np.int64) for x in labels]) if len(labels) else np.empty(0, np.int64)
    return lengths, flat


def multi_hot(label, labels=None, n_classes: int | None = None) -> np.ndarray:
    """(N, C) float32 0/1 targets of N images: row i has a 1 in the column of each class of image i.

    ``labels`` are the images' label sets (multi-label data: a sequence of integer arrays, such as
    the ``labels`` column of a split); without them (single-label data) each row is ``label``
    one-hot. ``n_classes`` defaults to the largest class number + 1.
    """
    if labels is None:
        classes = np.asarray(label, dtype=np.int64)
        rows = np.arange(len(classes))
    else:
        lengths, classes = _flat_label_sets(labels)
        rows = np.repeat(np.arange(len(labels)), lengths)
    needed = int(classes.max()) + 1 if len(classes) else 0
    n_classes = needed if n_classes is None else int(n_classes)
    if needed > n_classes or (len(classes) and classes.min() < 0):
        raise ValueError(f"class numbers must lie in 0..{n_classes - 1}, got {classes.min()}..{classes.max()}")
    targets = np.zeros((len(label) if labels is None else len(labels), n_classes), np.float32)
    targets[rows, classes] = 1
    return targets


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
    labels: np.ndarray | None = None  # multi-label data: each image's classes (an object array of int64 arrays)

    @property
    def is_binary(self) -> bool:
        return self.n_bits is not None

    @property
    def is_multilabel(self) -> bool:
        return self.labels is not None

    def targets(self, n_classes: int | None = None) -> np.ndarray:
        """(N, C) float32 0/1: each image's classes (its label one-hot for single-label data); see :func:`multi_hot`."""
        return multi_hot(self.label, self.labels, n_classes)

    def __len__(self) -> int:
        return len(self.image_id)

    def subset(self, role: str) -> "Descriptors":
        """The rows with the given role, in file order."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; expected one of {ROLES}")
        return self.subset_rows(getattr(self, role))

    def subset_rows(self, rows: np.ndarray) -> "Descriptors":
        """The rows selected by a boolean mask or an index array, in that order."""
        names = ("image_id", "label", "train", "database", "query", "values", *(["labels"] if self.is_multilabel else []))
        return replace(self, **{name: getattr(self, name)[rows] for name in names})

    def index_frame(self) -> pd.DataFrame:
        """The per-image columns without the descriptor values."""
        return pd.DataFrame(
            {
                "image_id": self.image_id,
                "label": self.label,
                **({"labels": self.labels} if self.is_multilabel else {}),
                "train": self.train,
                "database": self.database,
                "query": self.query,
            }
        )


def write_descriptors(path: str | os.PathLike, index: pd.DataFrame, values: np.ndarray, n_bits: int | None = None) -> None:
    """Write descriptors for the rows of ``index`` (columns image_id, label, train, database, query;
    and labels, for multi-label data; any other column is left out).

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
        **({"labels": _labels_column(index["labels"])} if "labels" in index.columns else {}),
        **{role: pa.array(index[role].to_numpy(bool), pa.bool_()) for role in ROLES},
    }
    metadata = {}
    if n_bits is None:
        columns["feature"] = _feature_column(values)
    else:
        if values.dtype != np.uint8 or values.shape[1] != n_bytes(n_bits):
            raise ValueError(f"{n_bits}-bit codes must be uint8 with {n_bytes(n_bits)} bytes per row")
        width = values.shape[1]
        buffer = pa.py_buffer(np.ascontiguousarray(values).tobytes())
        columns["code"] = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(values), [None, buffer])
        metadata[_N_BITS_KEY] = str(int(n_bits)).encode()
    table = pa.table(columns).replace_schema_metadata(metadata)
    write_parquet(table, path)


def _labels_column(labels) -> pa.ListArray:
    """Label sets (a sequence of integer arrays) as a column of lists of int64."""
    lengths, flat = _flat_label_sets(labels)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.int64()))


def _label_sets(column: pa.ChunkedArray, path) -> np.ndarray:
    """A ``labels`` column as an object array of int64 arrays; anything but non-empty lists of
    class numbers is refused, naming ``path``."""
    kind = column.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)) or not pa.types.is_integer(kind.value_type):
        raise ValueError(f"{path} is not a descriptor file: its labels are {kind}, not lists of class numbers")
    column = column.combine_chunks()
    flat = column.flatten()
    if column.null_count or flat.null_count:
        raise ValueError(f"{path} is not a descriptor file: it has missing labels")
    lengths = column.value_lengths().to_numpy(zero_copy_only=False)
    flat = flat.to_numpy(zero_copy_only=False).astype(np.int64)
    if (lengths == 0).any() or (flat < 0).any():
        raise ValueError(f"{path} is not a descriptor file: an image without labels or with a negative class number")
    return np.fromiter(np.split(flat, np.cumsum(lengths)[:-1]), dtype=object, count=len(lengths))


def _feature_column(values: np.ndarray) -> pa.FixedSizeListArray:
    flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).ravel(), pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])


def _feature_values(column: pa.ChunkedArray, path) -> np.ndarray:
    """A ``feature`` column as an (N, D) float32 array; anything but fixed-size lists of numbers
    without gaps is refused, naming ``path``."""
    kind = column.type
    if not pa.types.is_fixed_size_list(kind) or not (pa.types.is_floating(kind.value_type) or pa.types.is_integer(kind.value_type)):
        raise ValueError(f"{path} is not a descriptor file: its features are {kind}, not fixed-size lists of numbers")
    column = column.combine_chunks()
    if column.null_count or column.values.null_count:
        raise ValueError(f"{path} is not a descriptor file: it has missing feature values")
    values = column.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return values.reshape(len(column), kind.list_size)


def _check_index_columns(table: pa.Table, path) -> None:
    """The per-image columns of a descriptor file: string ids, integer labels, boolean roles, no gaps."""
    expected = {"image_id": pa.types.is_string, "label": pa.types.is_integer, **{role: pa.types.is_boolean for role in ROLES}}
    for name, is_kind in expected.items():
        column = table.column(name)
        if not (is_kind(column.type) or (name == "image_id" and pa.types.is_large_string(column.type))) or column.null_count:
            raise ValueError(f"{path} is not a descriptor file: column {name} is {column.type}{' with missing values' if column.null_count else ''}")


def _index_fields(table: pa.Table, path) -> dict:
    """The per-image arrays of a descriptor file's table (or a descriptor dataset's index), checked:
    the fields of :class:`Descriptors` but its values."""
    _check_index_columns(table, path)
    return {
        "image_id": table.column("image_id").to_numpy(zero_copy_only=False).astype(str),
        "label": table.column("label").to_numpy().astype(np.int64, copy=False),
        **{role: table.column(role).to_numpy(zero_copy_only=False) for role in ROLES},
        "labels": _label_sets(table.column("labels"), path) if "labels" in table.column_names else None,
    }


def _index_columns(path: Path) -> list[str]:
    """The per-image columns that a descriptor file (or dataset index) holds: ``labels`` only for multi-label data."""
    try:
        names = pq.read_schema(path).names
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"cannot read Parquet file {path}: {err}") from err
    return ["image_id", "label", *(["labels"] if "labels" in names else []), *ROLES]


def _code_values(table: pa.Table, path) -> tuple[int, np.ndarray]:
    """(n_bits, packed codes) of a descriptor file of binary codes, checked against each other."""
    raw = (table.schema.metadata or {}).get(_N_BITS_KEY, b"")
    column = table.column("code")
    if not raw.isdigit() or not 1 <= int(raw) <= 64:
        raise ValueError(f"{path} is not a descriptor file: its code length is {raw.decode(errors='replace')!r}, not 1 to 64 bits")
    n_bits = int(raw)
    if not pa.types.is_fixed_size_binary(column.type) or column.type.byte_width != n_bytes(n_bits) or column.null_count:
        raise ValueError(f"{path} is not a descriptor file: its codes are {column.type}, not {n_bytes(n_bits)}-byte codes of {n_bits} bits")
    column = column.combine_chunks()
    width = column.type.byte_width
    return n_bits, np.frombuffer(column.buffers()[1], dtype=np.uint8, count=len(column) * width, offset=column.offset * width).reshape(-1, width).copy()


def write_feature_shard(path: str | os.PathLike, image_id, label, values: np.ndarray) -> None:
    """Write one shard's features (rows of the dataset, no roles: a shard belongs to no split)."""
    values = np.asarray(values)
    if values.ndim != 2 or len(values) != len(image_id) or len(label) != len(image_id):
        raise ValueError(f"a shard needs one feature row and label per image: {len(image_id)} ids, {len(label)} labels, values {values.shape}")
    table = pa.table({"image_id": pa.array(np.asarray(image_id).astype(str), pa.string()), "label": pa.array(np.asarray(label, np.int64)), "feature": _feature_column(values)})
    write_parquet(table, path)


def write_descriptor_dataset(path: str | os.PathLike, index: pd.DataFrame, shard_paths) -> None:
    """Gather feature shards into a descriptor dataset (the module docstring) for the rows of
    ``index`` (columns image_id, label, train, database, query; in split order).

    Only the shards' image ids are read; their files are hard-linked into the folder (copied
    where links cannot be made), which is built beside ``path`` and renamed onto it."""
    path = Path(path)
    positions = []
    for part, shard in enumerate(map(Path, shard_paths)):
        if not shard.is_file():
            raise FileNotFoundError(f"missing feature shard: {shard}")
        ids = pq.read_table(shard, columns=["image_id"]).column("image_id").to_numpy(zero_copy_only=False)
        positions.append(pd.DataFrame({"image_id": ids.astype(str), "part": np.int32(part), "row": np.arange(len(ids), dtype=np.int64)}))
    columns = ["image_id", "label", *(["labels"] if "labels" in index.columns else []), *ROLES]
    located = index[columns].astype({"image_id": str}).merge(pd.concat(positions), on="image_id", how="left", validate="one_to_one")
    if located["part"].isna().any():
        missing = located.loc[located["part"].isna(), "image_id"].head().tolist()
        raise ValueError(f"no shard of {path} holds the features of {missing}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        for part, shard in enumerate(shard_paths):
            try:
                os.link(shard, tmp / f"part-{part:05d}.parquet")
            except OSError:  # another file system, or no hard links there
                shutil.copyfile(shard, tmp / f"part-{part:05d}.parquet")
        write_parquet(located.astype({"part": np.int32, "row": np.int64}), tmp / "_index.parquet")
        os.chmod(tmp, 0o777 & ~_UMASK)
        if path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read_descriptor_dataset(path: Path) -> Descriptors:
    index_path = path / "_index.parquet"
    try:
        index = pq.read_table(index_path, columns=_index_columns(index_path))
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"cannot read Parquet file {index_path}: {err}") from err
    values = None
    for positions, features in descriptor_chunks(path):
        if values is None:
            values = np.empty((len(index), features.shape[1]), np.float32)
        values[positions] = features
    return Descriptors(**_index_fields(index, index_path), values=values if values is not None else np.empty((0, 0), np.float32))


def descriptor_chunks(path: str | os.PathLike, chunk_rows: int = 65536):
    """Yield (positions, float32 features) of a features file or descriptor dataset, a chunk at a
    time (a dataset: one part at a time), so that a pass over all rows holds one chunk in memory;
    ``positions`` are the rows' places in the file's (split) order."""
    path = Path(path)
    if (path / "_index.parquet").is_file():
        index = read_parquet(path / "_index.parquet", columns=["part", "row"])
        for part, rows in index.groupby("part", sort=True):
            part_path = path / f"part-{int(part):05d}.parquet"
            if not part_path.is_file():
                raise FileNotFoundError(f"missing part of descriptor dataset {path}: {part_path.name}")
            try:
                features = _feature_values(pq.read_table(part_path, columns=["feature"]).column("feature"), part_path)
            except (pa.ArrowException, OSError, KeyError) as err:
                raise ValueError(f"cannot read {part_path}: {err}") from err
            yield rows.index.to_numpy(), features[rows["row"].to_numpy()]
        return
    if not path.is_file():
        raise FileNotFoundError(f"missing descriptor file: {path}")
    start = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows, columns=["feature"]):
        values = _feature_values(pa.chunked_array([batch.column(0)]), path)
        yield np.arange(start, start + len(values)), values
        start += len(values)


def read_descriptor_rows(path: str | os.PathLike, rows: np.ndarray) -> np.ndarray:
    """The features of ``rows`` (positions in the file's order, in the order given), read chunk
    by chunk: memory for those rows and one chunk, not for the whole file."""
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    wanted = rows[order]
    out = None
    for positions, values in descriptor_chunks(path):
        at = np.minimum(np.searchsorted(wanted, positions), max(len(wanted) - 1, 0))
        hit = wanted[at] == positions if len(wanted) else np.zeros(len(positions), bool)
        if out is None:
            out = np.empty((len(rows), values.shape[1]), np.float32)
        out[order[at[hit]]] = values[hit]
    return out if out is not None else np.empty((0, 0), np.float32)


def read_descriptor_index(path: str | os.PathLike) -> pd.DataFrame:
    """The per-image columns of a descriptor file or dataset (image_id, label, labels for
    multi-label data, roles), without values."""
    path = Path(path)
    if (path / "_index.parquet").is_file():
        path = path / "_index.parquet"
    elif not path.is_file():
        raise FileNotFoundError(f"missing descriptor file: {path}")
    return read_parquet(path, columns=_index_columns(path))


def read_descriptors(path: str | os.PathLike) -> Descriptors:
    """Read a file written by :func:`write_descriptors`, or a descriptor dataset."""
    path = Path(path)
    if (path / "_index.parquet").is_file():
        return _read_descriptor_dataset(path)
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
    fields = _index_fields(table, path)
    if "code" in names:
        n_bits, values = _code_values(table, path)
    else:
        n_bits = None
        values = _feature_values(table.column("feature"), path)
    return Descriptors(**fields, values=values, n_bits=n_bits)
