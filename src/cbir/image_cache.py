"""Decode once: a dataset's images converted, resized and stored as one uint8 N x C x S x S array.

Fine-tuning reads every training image once per epoch and extraction reads every image of a
split; decoding, converting and resizing them each time costs more CPU than a small network's
training step. :func:`build_image_cache` does it once per (dataset, colour mode, input size) and
writes the result as a ``.npy`` file, one row per manifest row (manifest order), which training
and extraction memory-map and gather batches from by row.

Array datasets (``pixels.npy``) read at their native size and colour mode need no cache: their
pixels already are the images the networks see (:func:`cbir.config.pixels_are_cache` says when, from the
config alone, so the workflow can leave the cache rule out).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from cbir.datasets import ImageReader, image_array, read_manifest
from cbir.io import atomic_output

log = logging.getLogger(__name__)

def native_pixels(images: pd.DataFrame, mode: str, size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(pixels as an N x C x S x S view, row of each image) when ``images`` all come from one
    pixel array whose shape and channels are those asked for; None otherwise."""
    paths = images["path"].unique()
    if len(images) == 0 or len(paths) != 1 or (images["index"] < 0).any():
        return None
    try:
        pixels = np.load(paths[0], mmap_mode="r")
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read pixel array {paths[0]}: {err}") from err
    if pixels.ndim != 4 or pixels.shape[1:] != (size, size, len(mode)):
        return None
    # N x H x W x C seen as N x C x H x W without a copy (for one channel the bytes are the same).
    return pixels.transpose(0, 3, 1, 2), images["index"].to_numpy(np.int64)


def decode_images(images: pd.DataFrame, mode: str, size: int, out: np.ndarray | None = None, threads: int | None = None) -> np.ndarray:
    """The images of manifest rows ``images`` as a uint8 N x C x size x size array (into ``out``).

    Files are decoded by a thread pool (Pillow releases the GIL while decoding and resizing);
    conversion and resizing are :func:`cbir.datasets.to_mode` and :func:`cbir.datasets.image_array`,
    the same as for a query image.
    """
    shape = (len(images), len(mode), size, size)
    out = np.empty(shape, np.uint8) if out is None else out
    if out.shape != shape or out.dtype != np.uint8:
        raise ValueError(f"decode target must be uint8 {shape}, got {out.dtype} {out.shape}")
    native = native_pixels(images, mode, size)
    if native is not None:
        pixels, rows = native
        for start in range(0, len(rows), 8192):
            out[start : start + 8192] = pixels[rows[start : start + 8192]]
        return out
    reader = ImageReader(images, mode)

    def decode(i: int) -> None:
        out[i] = image_array(reader[i], size)

    chunk = 2048
    with ThreadPoolExecutor(threads or min(8, os.cpu_count() or 1)) as pool:
        for start in range(0, len(images), chunk):
            list(pool.map(decode, range(start, min(start + chunk, len(images)))))
            if len(images) > chunk:
                log.info("decoded %d/%d images", min(start + chunk, len(images)), len(images))
    return out


def build_image_cache(manifest_path, mode: str, size: int, out_path, threads: int | None = None) -> None:
    """Decode every image of a manifest once into ``out_path``, a uint8 N x C x size x size
    ``.npy`` array in manifest order; written atomically, filled in place (never whole in memory)."""
    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
    manifest = read_manifest(manifest_path)
    shape = (len(manifest), len(mode), size, size)
    log.info("decoding %d images of %s as %s at %d x %d into %s (%.2f GiB)", len(manifest), manifest_path, mode, size, size, out_path, np.prod(shape) / 2**30)
    with atomic_output(out_path) as tmp:
        cache = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        decode_images(manifest, mode, size, out=cache, threads=threads)
        cache.flush()
        del cache


def open_image_cache(path, n_images: int, mode: str, size: int) -> np.ndarray:
    """A cache written by :func:`build_image_cache`, memory-mapped; its shape is checked against
    the manifest it should belong to."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing image cache: {path}")
    try:
        cache = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read image cache {path}: {err}") from err
    expected = (n_images, len(mode), size, size)
    if cache.dtype != np.uint8 or cache.shape != expected:
        raise ValueError(f"image cache {path} holds {cache.dtype} {cache.shape}, expected uint8 {expected}: it was built for another manifest, mode or size")
    return cache
