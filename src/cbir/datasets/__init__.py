"""Datasets: download or read a local copy, write a manifest, and read images back.

One module per family of sources (:mod:`~cbir.datasets.arrays`, :mod:`~cbir.datasets.folders`,
:mod:`~cbir.datasets.holidays`) under this one, which writes the manifest, and
:mod:`~cbir.datasets.images`, which reads images back.

Every dataset becomes a *manifest*, a Parquet table with one row per image:

``image_id``    stable id (``train/00042`` for array datasets, the relative file path for folders)
``label``       integer class (for Holidays: the group)
``class_name``  readable class name
``split``       the source split, ``train`` or ``test`` (``train`` where the source has no split)
``path``        where the pixels are: an image file, or the ``pixels.npy`` array beside the manifest
``index``       row in ``pixels.npy`` (-1 for image files)
``labels``      multi-label datasets only: every class of the image (a list of int64, ascending);
                ``label`` and ``class_name`` are then the first class its row of the labels table
                names, so that per-class protocols and classifiers read it as single-label data

Array datasets (digits, MNIST, Fashion-MNIST, CIFAR-10) store their pixels once in ``pixels.npy``
(uint8, N x H x W x C) so that training reads them without decoding thousands of small files.
Folder datasets (Caltech-101, Holidays, image folders, multi-label collections) point at their
image files.

Downloads go through torchvision (or, for Holidays, torchvision's download helpers); every loader
also takes ``root``, a local copy in the source's own on-disk format, and then never downloads.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from cbir.config import PIXEL_ARRAY_KINDS
from cbir.datasets import arrays, folders, holidays
from cbir.datasets.arrays import read_idx
from cbir.datasets.folders import LABEL_DELIMITER, read_labels_table
from cbir.datasets.images import DECODE_ERRORS, ImageReader, check_images, image_array, load_image, printable_path, to_mode
from cbir.io import atomic_output, read_parquet, write_parquet

__all__ = [
    "MANIFEST_COLUMNS", "LABEL_DELIMITER", "DECODE_ERRORS", "prepare_dataset", "read_manifest", "read_labels_table",
    "read_idx", "check_images", "load_image", "to_mode", "image_array", "printable_path", "ImageReader",
]

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["image_id", "label", "class_name", "split", "path", "index"]

_ARRAY_LOADERS = arrays.LOADERS
_FILE_LOADERS = {**folders.LOADERS, "holidays": holidays.load_holidays}


def prepare_dataset(
    kind: str, manifest_path: str | os.PathLike, root: str | None = None, download_dir: str | None = None, checksums: dict | None = None, labels: str | None = None
) -> pd.DataFrame:
    """Read (or download) a dataset and write its manifest (and ``pixels.npy`` beside it).

    ``root`` is a local copy in the source's on-disk format; without it the dataset is downloaded
    into ``download_dir`` (the bundled ``digits`` needs neither). ``checksums`` maps archive file
    names to expected SHA-256 digests for downloads that torchvision does not verify itself.
    ``labels`` is the path of a ``multilabel`` dataset's labels table (:func:`read_labels_table`).
    """
    if kind not in _ARRAY_LOADERS and kind not in _FILE_LOADERS and kind != "multilabel":
        raise ValueError(f"unknown dataset kind {kind!r}; expected one of {sorted([*_ARRAY_LOADERS, *_FILE_LOADERS, 'multilabel'])}")
    manifest_path = Path(manifest_path)
    out_dir = manifest_path.parent
    if root is not None and not Path(root).exists():
        raise FileNotFoundError(f"dataset root does not exist: {root}")
    if root is None and kind == "imagefolder":
        raise ValueError("an imagefolder dataset needs `root`: the folder holding <class>/<image> files")
    if kind == "multilabel" and (root is None or labels is None):
        raise ValueError("a multilabel dataset needs `root` (the folder of its images) and `labels` (its labels table)")
    download_dir = Path(download_dir or out_dir / "download")

    if kind in PIXEL_ARRAY_KINDS:
        pixels, image_labels, splits, classes = _ARRAY_LOADERS[kind](root, download_dir)
        manifest = _array_manifest(pixels, image_labels, splits, classes, out_dir / "pixels.npy")
        _save_npy(pixels, out_dir / "pixels.npy")
    else:
        manifest = read_labels_table(labels, root) if kind == "multilabel" else _FILE_LOADERS[kind](root, download_dir, checksums or {})
        check_images(manifest["path"])
    manifest = manifest[[*MANIFEST_COLUMNS, *(["labels"] if "labels" in manifest else [])]].reset_index(drop=True)
    if manifest["image_id"].duplicated().any():
        raise ValueError(f"duplicate image ids in {kind} dataset: {manifest['image_id'][manifest['image_id'].duplicated()].head().tolist()}")
    write_parquet(manifest, manifest_path)
    n_classes = len(np.unique(np.concatenate(manifest["labels"].to_numpy()))) if "labels" in manifest else manifest["label"].nunique()
    log.info("%s: %d images, %d classes, splits %s", kind, len(manifest), n_classes, manifest["split"].value_counts().to_dict())
    return manifest


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read a manifest written by :func:`prepare_dataset`."""
    manifest = read_parquet(path)
    missing = set(MANIFEST_COLUMNS) - set(manifest.columns)
    if missing:
        raise ValueError(f"{path} is not a dataset manifest: missing columns {sorted(missing)}")
    return manifest


def _array_manifest(pixels: np.ndarray, labels: np.ndarray, splits: np.ndarray, classes: list[str], pixels_path: Path) -> pd.DataFrame:
    index = np.arange(len(labels))
    # Number images within their split so that ids stay stable whatever else the source holds.
    within = pd.Series(index).groupby(splits).cumcount().to_numpy()
    return pd.DataFrame(
        {
            "image_id": [f"{s}/{i:05d}" for s, i in zip(splits, within)],
            "label": labels.astype(np.int64),
            "class_name": np.asarray(classes, dtype=object)[labels],
            "split": splits,
            "path": str(pixels_path),
            "index": index.astype(np.int64),
        }
    )


def _save_npy(array: np.ndarray, path: Path) -> None:
    with atomic_output(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, np.ascontiguousarray(array))
