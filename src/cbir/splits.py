"""Split protocols: which images train the models, which form the database, which are queries.

A split is a table with one row per image that has at least one role: ``image_id``, ``label``,
``class_name``, ``split`` (the source split) and the boolean role flags ``train``, ``database`` and
``query``. Rows are in a seeded random order, so the database (the rows flagged ``database``, in
file order) is never class-sorted and the order of tied search results is random, not by class.

Two protocol kinds cover the papers:

``per_class``  per class, ``query_per_class`` queries, ``database_per_class`` database images and
               ``train_per_class`` training images, each an integer or ``all``; ``train`` may also
               be ``database`` (train = database, as in the hashing paper), and the database
               ``rest`` (every image that is neither a query nor a training image). Queries come
               from the source's test split; where there is none (digits, Caltech-101, image
               folders) or ``pool_splits`` is true (the train and test splits drawn from as one,
               as DeepHash-pytorch does with CIFAR-10), the training images are sampled first,
               then the database, then the queries from what is left, so no query is ever trained
               on or in the database.
``holidays``   the image ending in 00 of each group is its query; the database is every other
               image, and the models train on the database.

:data:`PRESETS` holds the protocols the literature names, in this vocabulary.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

ROLES = ("train", "database", "query")

#: Protocols known by their name in the literature: a dataset's ``protocol`` may name one without defining it under
#: ``protocols`` (a protocol defined there may not take a preset's name). Definitions and sources: docs/concepts.md.
PRESETS = {
    # DeepHash-pytorch's three CIFAR-10 settings (utils/tools.py, cifar_dataset): the 60,000 images pooled.
    "cifar10": {"kind": "per_class", "pool_splits": True, "query_per_class": 100, "train_per_class": 500, "database_per_class": "rest"},
    "cifar10-1": {"kind": "per_class", "pool_splits": True, "query_per_class": 100, "train_per_class": 500, "database_per_class": "all"},
    "cifar10-2": {"kind": "per_class", "pool_splits": True, "query_per_class": 1000, "train_per_class": "database", "database_per_class": 5000},
    # The first paper's Table II (CIFAR-10, MNIST); config/paper.yaml's paper-cifar and paper-mnist.
    "first-paper": {"kind": "per_class", "query_per_class": 100, "train_per_class": "database", "database_per_class": 1000},
}


class SplitError(ValueError):
    """A protocol asks for more images than a class has; the message names the config key."""


def sample_split(manifest: pd.DataFrame, protocol: dict, seed: int, name: str = "protocol") -> pd.DataFrame:
    """Assign roles to the images of ``manifest`` by ``protocol`` (the config entry
    ``protocols.<name>``) and ``seed``.

    Integer sizes are exact: a class with fewer candidates is an error naming
    ``protocols.<name>.<key>``, the class and its count. ``all`` takes every candidate and
    ``{up_to: n}`` at most n (the Caltech-101 protocol's "up to 20 queries per class"): taking
    fewer is asked for, never silent.
    """
    rng = np.random.default_rng(seed)
    # Sort by id so the result depends on the seed and the images, not on the manifest's order.
    manifest = manifest.sort_values("image_id", kind="stable").reset_index(drop=True)
    kind = protocol["kind"]
    if kind == "per_class":
        roles = _per_class(manifest, protocol, rng, f"protocols.{name}")
    elif kind == "holidays":
        roles = _holidays(manifest)
    else:
        raise ValueError(f"unknown protocol kind {kind!r}")
    # Multi-label data keep each image's classes (`labels`) for training and evaluation.
    columns = ["image_id", "label", *(["labels"] if "labels" in manifest else []), "class_name", "split"]
    split = pd.concat([manifest[columns], roles], axis=1)
    split = split[split[list(ROLES)].any(axis=1)]
    if (split["query"] & (split["database"] | split["train"])).any():
        raise AssertionError("a query image is also a database or training image")
    for role, key in (("query", "query_per_class"), ("database", "database_per_class")):
        if not split[role].any():
            raise SplitError(f"protocols.{name}.{key}: the protocol leaves no {role} images")
    order = rng.permutation(len(split))
    return split.iloc[order].reset_index(drop=True)


def _take(rng: np.random.Generator, pool: np.ndarray, count, key: str, class_name: str, what: str) -> np.ndarray:
    """``count`` of ``pool`` (``all``, an exact integer, or ``{up_to: n}``), sorted."""
    if count == "all":
        return pool
    if isinstance(count, dict):
        count = min(int(count["up_to"]), len(pool))
    elif count > len(pool):
        raise SplitError(f"{key}: {count} images per class asked for, but class {class_name!r} has only {len(pool)} {what}")
    return np.sort(rng.choice(pool, size=int(count), replace=False))


def _per_class(manifest: pd.DataFrame, protocol: dict, rng: np.random.Generator, key: str) -> pd.DataFrame:
    roles = pd.DataFrame(False, index=manifest.index, columns=list(ROLES))
    has_test = (manifest["split"] == "test").any() and not protocol.get("pool_splits", False)
    n_query, n_database = protocol["query_per_class"], protocol["database_per_class"]
    n_train = protocol.get("train_per_class", "database")
    for _, rows in manifest.groupby("label", sort=True):
        name = str(rows["class_name"].iloc[0])
        # Candidates for training and the database; queries come from the test split if any.
        source = "training-split images" if has_test else "images"
        pool = rows.index[rows["split"] == "train"].to_numpy() if has_test else rows.index.to_numpy()
        take = lambda pool, count, option, what: _take(rng, pool, count, f"{key}.{option}", name, what)  # noqa: E731
        train = take(pool, n_train, "train_per_class", source) if isinstance(n_train, int) else pool[:0]
        if has_test:
            queries = take(rows.index[rows["split"] == "test"].to_numpy(), n_query, "query_per_class", "test-split images")
            database = np.setdiff1d(pool, train) if n_database == "rest" else take(pool, n_database, "database_per_class", source)
        elif n_database in ("all", "rest"):
            queries = take(np.setdiff1d(pool, train), n_query, "query_per_class", "images left after the training images")
            database = np.setdiff1d(pool, queries if n_database == "all" else np.union1d(train, queries))
        else:
            database = take(pool, n_database, "database_per_class", source)
            queries = take(np.setdiff1d(pool, np.union1d(train, database)), n_query, "query_per_class", "images left after the training and database images")
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
