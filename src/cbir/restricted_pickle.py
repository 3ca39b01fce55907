"""Reading the Python-pickle files that datasets ship in (CIFAR-10/100's batches) without running code.

``pickle.load`` calls whatever callable a file names, so a batch downloaded from a mirror could run
anything on the machine that reads it. :class:`RestrictedUnpickler` resolves only the few names that
a pickle of plain containers and numeric numpy arrays needs (numpy's array and scalar
reconstructors, ``numpy.dtype`` for non-object dtypes, ``_codecs.encode`` for Python 2 byte
strings); any other name, and any object dtype, stops the load before anything is called.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

try:  # numpy 2
    from numpy._core.multiarray import scalar as _numpy_scalar
except ImportError:  # numpy 1
    from numpy.core.multiarray import scalar as _numpy_scalar


def _plain_dtype(*args):
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError("an array of Python objects (dtype object) is refused")
    return dtype


def _reconstruct(subtype, *args):
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"array subtype {subtype!r} is refused")
    return np.ndarray.__new__(np.ndarray, *args)


def _scalar(dtype, *args):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError("a numpy scalar of Python objects is refused")
    return _numpy_scalar(dtype, *args)


def _frombuffer(buffer, dtype, shape, order):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError("an array of Python objects (dtype object) is refused")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)


def _encode(text, encoding="latin1"):
    if encoding != "latin1":
        raise pickle.UnpicklingError(f"byte-string encoding {encoding!r} is refused")
    return text.encode("latin1")


#: (module, name) -> what it resolves to: numpy 1's and numpy 2's module names alike.
_ALLOWED = {
    **{(module, "_reconstruct"): _reconstruct for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "scalar"): _scalar for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "_frombuffer"): _frombuffer for module in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _plain_dtype,
    ("_codecs", "encode"): _encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds dicts, lists, strings, numbers and numeric numpy arrays, and
    refuses every other global a file names (see the module docstring)."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a data file has no use for; refusing to call it") from None


def load_plain_pickle(path: str | Path, what: str = "pickle file"):
    """The plain data (containers, numbers, strings, numeric arrays) pickled in ``path``, read
    with :class:`RestrictedUnpickler` (``encoding="latin1"``, for files pickled by Python 2).
    A file that names anything else is refused with a ValueError naming it; nothing it names runs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing {what}: {path}")
    data = path.read_bytes()
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
        raise ValueError(f"{what} {path} cannot be read as plain data: {err}") from None
