"""Retrieval metrics: precision/recall, mAP@k (hashing convention), tie-aware AP, PR curves, Holidays AP.

Inputs are numpy arrays, one row per query:

* ``rel`` -- ranked relevance, (Q, k) bool: ``rel[q, i]`` is True when the item at rank ``i``
  (0-based) of query ``q``'s result list is relevant (:func:`ranked_relevance` builds it from
  search indices and labels);
* ``n_relevant`` -- (Q,) number of relevant items in the whole database per query
  (:func:`count_relevant`);
* ``distances`` / ``relevant`` -- full (Q, N) distance rows and relevance over the whole
  database, for the metrics that need every item (tie-aware AP, PR curves by radius).

Conventions (see the README section "Retrieval and evaluation"):

* **AP@k** (:func:`average_precision_at_k`) follows the deep-hashing literature (the evaluation
  code of CNNH, DPSH, HashNet, ...): ``AP@k = (1 / R_k) * sum_{i<=k} P@i * rel_i`` where ``R_k``
  is the number of relevant items *retrieved in the top k*; a query with ``R_k = 0`` scores 0
  and is kept in the mean. Other libraries differ: HashNet's original code drops such queries
  from the mean; "true" AP@k (e.g. ml_metrics ``apk``) divides by ``min(R, k)``; trec_eval's
  ``map_cut_k`` divides by all ``R`` relevant items in the database. All three are available
  through ``normalization=``. Ranks are ordered by (distance, database index), as faiss does.
* **Tie-aware AP@k** (He, Cakir, Bargal & Sclaroff, CVPR 2018): the exact expectation of AP@k
  when items at equal distance are ordered uniformly at random -- independent of the database
  order; see :func:`tie_aware_average_precision_at_k`.
* **mAP over the whole database** (:func:`average_precision`): classic AP, dividing by all
  relevant items (used for Caltech-101); with ``k = N`` the two AP definitions coincide.
* A query with no relevant item: AP = 0 and recall = ``zero_division`` (default 0).
* ``k`` larger than a result list (a database smaller than ``k``) is clamped to the list length.

The metrics live in one module per concern: :mod:`cbir.metrics.relevance` (what is relevant),
:mod:`cbir.metrics.ranking` (precision, recall, AP, rankings, :func:`evaluate_distances`),
:mod:`cbir.metrics.tie_aware` (expectations over the orders of ties), :mod:`cbir.metrics.curves`
(precision-recall curves) and :mod:`cbir.metrics.holidays` (INRIA Holidays' AP); import them from
here.
"""

from __future__ import annotations

from cbir.metrics._common import DEFAULT_K, NORMALIZATIONS
from cbir.metrics.curves import distance_histograms, pr_curve_by_k, pr_curve_by_radius
from cbir.metrics.holidays import holidays_average_precision, holidays_mean_average_precision, score_ap_from_ranks_1
from cbir.metrics.ranking import (
    average_precision,
    average_precision_at_k,
    evaluate_distances,
    mean_average_precision,
    mean_average_precision_at_k,
    precision_at_k,
    recall_at_k,
    top_k_by_distance,
)
from cbir.metrics.relevance import count_relevant, neighbour_relevance, ranked_relevance, relevance_from_labels
from cbir.metrics.tie_aware import (
    tie_aware_ap_from_groups,
    tie_aware_average_precision_at_k,
    tie_aware_precision_at_k,
    tie_aware_precision_from_groups,
    tie_groups,
)

__all__ = [
    "DEFAULT_K",
    "NORMALIZATIONS",
    "average_precision",
    "average_precision_at_k",
    "count_relevant",
    "distance_histograms",
    "evaluate_distances",
    "holidays_average_precision",
    "holidays_mean_average_precision",
    "mean_average_precision",
    "mean_average_precision_at_k",
    "neighbour_relevance",
    "pr_curve_by_k",
    "pr_curve_by_radius",
    "precision_at_k",
    "ranked_relevance",
    "recall_at_k",
    "relevance_from_labels",
    "score_ap_from_ranks_1",
    "tie_aware_ap_from_groups",
    "tie_aware_average_precision_at_k",
    "tie_aware_precision_at_k",
    "tie_aware_precision_from_groups",
    "tie_groups",
    "top_k_by_distance",
]
