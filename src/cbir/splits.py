"""Split protocols: which images train the models, which form the database, which are queries.

A split is a table with one row per image that has at least one role: ``image_id``, ``label``,
``class_name``, ``split`` (the source split) and the boolean role flags ``train``, ``database`` and
``query``. Rows are in a seeded random order, so the database (the rows flagged ``database``, in
file order) is never class-sorted and the order of tied search results is random, not by class.

Two protocol kinds cover the papers:

``per_class``  per class, ``query_per_class`` queries, ``database_per_class`` database images and
               ``train_per_class`` training images, each an integer or ``all``; ``train`` may also
               be ``database`` (train = database, as in the hashing paper). Queries come from the
               source's test split; where there is none (digits, Caltech-101, image folders), the
               training images are sampled first, then the database, then the queries from what
               is left, so no query is ever trained on or in the database.
``holidays``   the image ending in 00 of each group is its query; the database is every other
               image, and the models train on the database.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

ROLES = ("train", "database", "query")


def sample_split(manifest: pd.DataFrame, protocol: dict, seed: int) -> pd.DataFrame:
    """Assign roles to the images of ``manifest`` by ``protocol`` (a config entry) and ``seed``."""
    rng = np.random.default_rng(seed)
    # Sort by id so the result depends on the seed and the images, not on the manifest's order.
    manifest = manifest.sort_values("image_id", kind="stable").reset_index(drop=True)
    kind = protocol["kind"]
    if kind == "per_class":
        roles = _per_class(manifest, protocol, rng)
    elif kind == "holidays":
        roles = _holidays(manifest)
    else:
        raise ValueError(f"unknown protocol kind {kind!r}")
    split = pd.concat([manifest[["image_id", "label", "class_name", "split"]], roles], axis=1)
    split = split[split[list(ROLES)].any(axis=1)]
    if (split["query"] & (split["database"] | split["train"])).any():
        raise AssertionError("a query image is also a database or training image")
    order = rng.permutation(len(split))
    return split.iloc[order].reset_index(drop=True)


def _take(rng: np.random.Generator, pool: np.ndarray, count) -> np.ndarray:
    if count == "all" or count >= len(pool):
        return pool
    return np.sort(rng.choice(pool, size=int(count), replace=False))


def _per_class(manifest: pd.DataFrame, protocol: dict, rng: np.random.Generator) -> pd.DataFrame:
    roles = pd.DataFrame(False, index=manifest.index, columns=list(ROLES))
    has_test = (manifest["split"] == "test").any()
    n_query, n_database = protocol["query_per_class"], protocol["database_per_class"]
    n_train = protocol.get("train_per_class", "database")
    for _, rows in manifest.groupby("label", sort=True):
        # Candidates for training and the database; queries come from the test split if any.
        pool = rows.index[rows["split"] == "train"].to_numpy() if has_test else rows.index.to_numpy()
        train = _take(rng, pool, n_train) if isinstance(n_train, int) else pool[:0]
        if has_test:
            queries = _take(rng, rows.index[rows["split"] == "test"].to_numpy(), n_query)
            database = _take(rng, pool, n_database)
        elif n_database == "all":
            queries = _take(rng, np.setdiff1d(pool, train), n_query)
            database = np.setdiff1d(pool, queries)
        else:
            database = _take(rng, pool, n_database)
            queries = _take(rng, np.setdiff1d(pool, np.union1d(train, database)), n_query)
        if n_train == "database":
            train = database
        elif n_train == "all":
            train = np.setdiff1d(pool, queries)
        roles.loc[train, "train"] = True
        roles.loc[database, "database"] = True
        roles.loc[queries, "query"] = True
    return roles


def _holidays(manifest: pd.DataFrame) -> pd.DataFrame:
    query = (manifest["split"] == "test").to_numpy()
    return pd.DataFrame({"train": ~query, "database": ~query, "query": query}, index=manifest.index)


def class_counts(split: pd.DataFrame) -> pd.DataFrame:
    """Images per class and role, with a total row: the table a person checks first."""
    counts = split.groupby(["label", "class_name"], sort=True)[list(ROLES)].sum().reset_index()
    total = pd.DataFrame([{"label": -1, "class_name": "total", **{r: int(split[r].sum()) for r in ROLES}}])
    return pd.concat([counts, total], ignore_index=True)
