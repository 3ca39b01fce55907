"""What every metric module shares: the AP normalisations, the default k and the checks of
the inputs (private to :mod:`cbir.metrics`)."""

from __future__ import annotations

import numpy as np


NORMALIZATIONS = ("retrieved", "min", "all")
DEFAULT_K = 1000


def _as_rel(rel: np.ndarray, name: str = "rel") -> np.ndarray:
    rel = np.asarray(rel)
    if rel.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n_queries, n_items) array, got shape {rel.shape}")
    if rel.dtype != bool:
        if rel.dtype.kind not in "iuf" or not np.isin(rel, (0, 1)).all():
            raise ValueError(f"{name} must be boolean (or 0/1), got dtype {rel.dtype}")
        rel = rel.astype(bool)
    return rel


def _as_k(k: int | None, width: int) -> int:
    """``k`` clamped to ``width``; ``None`` means the whole list."""
    if k is None:
        return width
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be a positive integer or None, got {k!r}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return min(int(k), width)


def _as_n_relevant(n_relevant, n_queries: int, hits: np.ndarray | None = None) -> np.ndarray:
    n_relevant = np.asarray(n_relevant)
    if n_relevant.shape != (n_queries,):
        raise ValueError(f"n_relevant must have shape ({n_queries},), got {n_relevant.shape}")
    if n_relevant.dtype.kind not in "iu" and not (n_relevant.dtype.kind == "f" and (n_relevant == np.round(n_relevant)).all()):
        raise ValueError(f"n_relevant must hold integer counts, got dtype {n_relevant.dtype}")
    n_relevant = n_relevant.astype(np.int64)
    if (n_relevant < 0).any():
        raise ValueError("n_relevant must be non-negative")
    if hits is not None and (n_relevant < hits).any():
        raise ValueError("n_relevant is smaller than the number of relevant items retrieved for some query")
    return n_relevant


def _safe_divide(num: np.ndarray, den: np.ndarray, zero_division: float) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, float(zero_division))
    np.divide(num, den, out=out, where=den > 0)
    return out


def _check_pair(distances: np.ndarray, relevant: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    distances = np.asarray(distances)
    relevant = _as_rel(relevant, "relevant")
    if distances.ndim != 2 or distances.shape != relevant.shape:
        raise ValueError(f"distances and relevant must be 2-D arrays of the same shape, got {distances.shape} and {relevant.shape}")
    if distances.dtype.kind not in "iuf":
        raise ValueError(f"distances must be numeric, got dtype {distances.dtype}")
    if distances.dtype.kind == "f" and np.isnan(distances).any():
        raise ValueError("distances contain NaN")
    if distances.shape[1] == 0:
        raise ValueError("empty database: distances have no columns")
    return distances, relevant
