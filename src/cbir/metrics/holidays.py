"""INRIA Holidays' official AP (the dataset's evaluation script, in Python)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np


def score_ap_from_ranks_1(ranks: Sequence[int], nres: int) -> float:
    """AP of one search, as ``score_ap_from_ranks_1`` of the official Holidays ``holidays_map.py``.

    ``ranks``: increasing 0-based ranks of the true positives in the result list (the query
    itself removed); ``nres``: number of positives in the dataset. The precision-recall curve
    is integrated with the trapezoid rule: each positive adds ``1/nres`` of recall, between
    precision ``ntp / rank`` (1 at rank 0) on the left and ``(ntp + 1) / (rank + 1)`` on the right.
    The official script divides by zero when ``nres == 0``; this returns 0 instead.
    """
    if nres <= 0:
        return 0.0
    ap = 0.0
    recall_step = 1.0 / nres
    for ntp, rank in enumerate(ranks):
        precision_0 = 1.0 if rank == 0 else ntp / float(rank)
        precision_1 = (ntp + 1) / float(rank + 1)
        ap += (precision_1 + precision_0) * recall_step / 2.0
    return ap


def holidays_average_precision(ranked_ids: Sequence, relevant_ids: Iterable, query_id=None) -> float:
    """Holidays AP of one query from its ranked result list, exactly as ``holidays_map.py``.

    ``ranked_ids``: database image ids, best first (may be truncated). ``relevant_ids``: the
    other images of the query's group. ``query_id``: the query image; if it occurs in the list it
    is skipped and the ranks after it shift up by one (the script's ``rank_shift``), and it is
    never counted as relevant. The number of positives is the size of the relevant set (without
    the query), so relevant images missing from a truncated list lower the AP.
    """
    relevant = set(relevant_ids)
    relevant.discard(query_id)
    ranks = []
    shift = 0
    for rank, image_id in enumerate(ranked_ids):
        if query_id is not None and image_id == query_id:
            shift = -1
        elif image_id in relevant:
            ranks.append(rank + shift)
    return score_ap_from_ranks_1(ranks, len(relevant))


def holidays_mean_average_precision(results: Mapping, ground_truth: Mapping) -> float:
    """Holidays mAP: mean of :func:`holidays_average_precision` over queries.

    ``results`` maps each query id to its ranked list of database ids; ``ground_truth`` maps each
    query id to its relevant ids. Like the official script, every ground-truth query must have
    results (KeyError otherwise) and unknown queries are an error.
    """
    unknown = set(results) - set(ground_truth)
    if unknown:
        raise KeyError(f"results for unknown queries: {sorted(map(str, unknown))[:5]}")
    missing = set(ground_truth) - set(results)
    if missing:
        raise KeyError(f"no results for queries: {sorted(map(str, missing))[:5]}")
    if not results:
        raise ValueError("no queries")
    return float(np.mean([holidays_average_precision(results[q], ground_truth[q], q) for q in results]))
