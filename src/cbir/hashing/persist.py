"""Hash models on disk without pickle.

Users exchange built indexes, and unpickling a received file (``joblib.load``) runs whatever code
it holds. A fitted hasher is therefore stored as two plain files:

* ``<name>.npz`` -- its fitted arrays (``hasher.<attr>``) and the preprocessing's
  (``preprocessing.<key>``), read back with ``np.load(..., allow_pickle=False)``;
* ``<name>.json`` -- format and version, the registry name of the method (the class is looked up
  in :data:`cbir.hashing.HASHERS` or among the installed hasher plug-ins, :mod:`cbir.plugins`;
  a file never names a module to import), its ``get_params()``, its scalar fitted attributes, and
  the preprocessing's scalars.

The estimator is rebuilt as ``cls(**params)`` plus those attributes. BA's ``trace_`` is not part
of the model (the pipeline writes it as its own TSV).
"""

from __future__ import annotations

import json
import numbers
import re
from pathlib import Path

import numpy as np
from sklearn.utils.validation import check_is_fitted

from cbir.io import atomic_output, read_json

FORMAT = "cbir-hasher"
VERSION = 1
_NOT_STORED = {"trace_"}
_ATTRIBUTE = re.compile(r"[A-Za-z][A-Za-z0-9_]*_\Z")


def metadata_path(path) -> Path:
    """The JSON file beside the model's ``.npz``."""
    return Path(path).with_suffix(".json")


def _split(values: dict, owner: str) -> tuple[dict, dict]:
    """(arrays, JSON scalars) of a dict of attributes or parameters."""
    arrays, scalars = {}, {}
    for name, value in values.items():
        if isinstance(value, np.ndarray):
            if value.dtype == object:
                raise TypeError(f"cannot store {owner} {name!r}: object arrays need pickle")
            arrays[name] = value
        elif isinstance(value, (bool, np.bool_)):
            scalars[name] = bool(value)
        elif isinstance(value, (numbers.Number, str)) or value is None:
            scalars[name] = value.item() if isinstance(value, np.generic) else value
        else:
            raise TypeError(f"cannot store {owner} {name!r} of type {type(value).__name__} without pickle")
    return arrays, scalars


def _json_safe(value, name):
    try:
        return json.loads(json.dumps(value))
    except TypeError:
        raise TypeError(f"cannot store parameter {name!r}={value!r} in JSON (e.g. random_state must be an int or None)") from None


def save_hasher(hasher, path, preprocessing: dict | None = None) -> None:
    """Write a fitted hasher (and the preprocessing params of :mod:`cbir.preprocess`) to ``path``
    (``.npz``) and its ``.json`` sibling, atomically each."""
    from cbir import plugins
    from cbir.hashing import HASHERS

    check_is_fitted(hasher, "n_features_in_")
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"a hash model file must end in .npz, got {path}")
    method = next((name for name, cls in HASHERS.items() if type(hasher) is cls), None) or plugins.name_of(plugins.HASHERS, type(hasher))
    if method is None:
        raise TypeError(f"{type(hasher).__name__} is neither a built-in hasher nor an installed plug-in")
    fitted = {k: v for k, v in vars(hasher).items() if _ATTRIBUTE.match(k) and k not in _NOT_STORED}
    arrays, attributes = _split(fitted, "attribute")
    prep_arrays, prep_scalars = _split(dict(preprocessing or {}), "preprocessing entry")
    params = {name: _json_safe(value, name) for name, value in hasher.get_params(deep=False).items()}
    meta = {
        "format": FORMAT, "version": VERSION, "method": method, "params": params, "attributes": attributes,
        "arrays": sorted(arrays), "preprocessing": None if preprocessing is None else prep_scalars,
        "preprocessing_arrays": sorted(prep_arrays),
    }
    stored = {f"hasher.{k}": v for k, v in arrays.items()} | {f"preprocessing.{k}": v for k, v in prep_arrays.items()}
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **stored)
    with atomic_output(metadata_path(path)) as tmp:
        tmp.write_text(json.dumps(meta, indent=1))


def _read(path: Path) -> tuple[dict, dict]:
    """(metadata, arrays) of a model file, refusing anything but plain arrays."""
    meta_path = metadata_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing hash model file: {path}")
    if not meta_path.is_file():
        raise FileNotFoundError(f"missing hash model metadata: {meta_path} (written beside {path.name})")
    meta = read_json(meta_path, "hash model's JSON metadata")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"{meta_path} is not a {FORMAT} version {VERSION} file")
    fields = {"method": str, "params": dict, "attributes": dict, "arrays": list, "preprocessing": (dict, type(None)), "preprocessing_arrays": list}
    wrong = [name for name, kind in fields.items() if not isinstance(meta.get(name), kind)]
    if wrong or not all(isinstance(n, str) for n in meta["arrays"] + meta["preprocessing_arrays"]):
        raise ValueError(f"{meta_path} is damaged: {', '.join(wrong) or 'array names'} missing or of the wrong type")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with loaded:
            arrays = {name: loaded[name] for name in loaded.files}
    except (ValueError, OSError, EOFError) as err:
        # a pickle (e.g. an old joblib model) lands here: np.load refuses it without running it
        raise ValueError(f"{path} is not a plain-array hash model (.npz without pickled objects); refusing to load it: {err}") from None
    expected = {f"hasher.{k}" for k in meta["arrays"]} | {f"preprocessing.{k}" for k in meta["preprocessing_arrays"]}
    if set(arrays) != expected:
        raise ValueError(f"{path} does not hold the arrays its metadata lists: {sorted(set(arrays) ^ expected)}")
    return meta, arrays


def load_hash_model(path):
    """(hasher, preprocessing params or None) stored at ``path`` (``.npz`` plus its ``.json``) by
    :func:`save_hasher`."""
    from cbir import plugins
    from cbir.hashing import HASHERS

    path = Path(path)
    meta, arrays = _read(path)
    cls = HASHERS.get(meta["method"])
    if cls is None and meta["method"] in plugins.names(plugins.HASHERS):
        cls = plugins.load(plugins.HASHERS, meta["method"])
    if cls is None:
        raise ValueError(f"{metadata_path(path)}: unknown hashing method {meta['method']!r}")
    names = list(meta["attributes"]) + list(meta["arrays"])
    if not all(isinstance(n, str) and _ATTRIBUTE.match(n) for n in names):
        raise ValueError(f"{metadata_path(path)}: invalid attribute names")
    try:
        hasher = cls(**meta["params"])
        for name, value in meta["attributes"].items():
            setattr(hasher, name, value)
        for name in meta["arrays"]:
            setattr(hasher, name, arrays[f"hasher.{name}"])
        preprocessing = None
        if meta["preprocessing"] is not None:
            preprocessing = dict(meta["preprocessing"]) | {k: arrays[f"preprocessing.{k}"] for k in meta["preprocessing_arrays"]}
        _check_encodes(hasher, preprocessing)
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError) as err:
        raise ValueError(f"{path} (with {metadata_path(path).name}) is not a usable {meta['method']} model: {err.__class__.__name__}: {str(err).splitlines()[0][:300]}") from None
    return hasher, preprocessing


def _check_encodes(hasher, preprocessing: dict | None) -> None:
    """A loaded hasher (after its preprocessing) must turn rows of its input width into codes of
    its length: arrays of the wrong shape, or parameters of the wrong kind, fail here rather
    than in the first search."""
    from cbir.codes import MAX_BITS, n_bytes
    from cbir.preprocess import apply_preprocessing

    n_bits, width = hasher.n_bits, hasher.n_features_in_
    if isinstance(n_bits, bool) or not isinstance(n_bits, int) or not 1 <= n_bits <= MAX_BITS:
        raise ValueError(f"n_bits is {n_bits!r}, not an integer from 1 to {MAX_BITS}")
    if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= 1_000_000:
        raise ValueError(f"n_features_in_ is {width!r}, not a positive integer")
    rows = np.zeros((2, width), dtype=np.float32)
    codes = hasher.encode(rows if preprocessing is None else apply_preprocessing(preprocessing, rows))
    if codes.shape != (2, n_bytes(n_bits)) or codes.dtype != np.uint8:
        raise ValueError(f"it encodes to {codes.dtype} {codes.shape}, not {n_bits}-bit codes")


def load_hasher(path):
    """The fitted hasher stored at ``path`` by :func:`save_hasher`."""
    return load_hash_model(path)[0]
