"""Decode once: the image cache holds what the reader would decode, and training reads from it."""

from __future__ import annotations

import numpy as np
import pytest

from cbir.datasets import ImageReader, image_array, prepare_dataset, read_manifest
from cbir.features import image_set, split_images
from cbir.config import NATIVE_SIZES, pixels_are_cache
from cbir.image_cache import build_image_cache, open_image_cache
from cbir.io import write_parquet
from cbir.training import ImageTensors

from conftest import make_mnist, save_image


@pytest.fixture
def folder_manifest(tmp_path):
    """Six RGB and grayscale files of different sizes in two classes."""
    root = tmp_path / "photos"
    for i in range(6):
        save_image(root / f"c{i % 2}" / f"{i}.png", "L" if i == 3 else "RGB", size=(9 + i, 13 - i), seed=i)
    path = tmp_path / "ds" / "manifest.parquet"
    prepare_dataset("imagefolder", path, root=str(root))
    return path


@pytest.mark.parametrize("mode, size", [("RGB", 8), ("L", 11)])
def test_cache_holds_the_decoded_resized_images_in_manifest_order(tmp_path, folder_manifest, mode, size):
    cache_path = tmp_path / "cache.npy"
    build_image_cache(folder_manifest, mode, size, cache_path, threads=2)
    manifest = read_manifest(folder_manifest)
    cache = open_image_cache(cache_path, len(manifest), mode, size)
    assert isinstance(cache, np.memmap) and cache.shape == (6, len(mode), size, size)
    reader = ImageReader(manifest, mode)
    for row in range(len(manifest)):
        np.testing.assert_array_equal(cache[row], image_array(reader[row], size))
    assert sorted(p.name for p in cache_path.parent.iterdir()) == ["cache.npy", "ds", "photos"]  # no temporary file left


def test_cache_of_another_mode_or_size_is_refused_naming_it(tmp_path, folder_manifest):
    cache_path = tmp_path / "rgb8.npy"
    build_image_cache(folder_manifest, "RGB", 8, cache_path)
    with pytest.raises(ValueError, match="rgb8.npy.*another manifest, mode or size"):
        open_image_cache(cache_path, 6, "RGB", 16)
    with pytest.raises(ValueError, match="rgb8.npy"):
        open_image_cache(cache_path, 7, "RGB", 8)
    with pytest.raises(FileNotFoundError, match="nothere.npy"):
        open_image_cache(tmp_path / "nothere.npy", 6, "RGB", 8)


def test_training_input_is_the_same_from_cache_files_and_pixels(tmp_path):
    """An array dataset at its native size is read from pixels.npy without a cache; the cache and
    decoding the rows give the same images."""
    manifest_path = tmp_path / "mnist" / "manifest.parquet"
    prepare_dataset("mnist", manifest_path, root=str(make_mnist(tmp_path / "src")))
    manifest = read_manifest(manifest_path)
    split = manifest[["image_id", "label"]].assign(train=manifest["split"] == "train", database=False, query=manifest["split"] == "test").sample(frac=1, random_state=0)
    write_parquet(split, tmp_path / "split.parquet")
    images = split_images(manifest_path, tmp_path / "split.parquet")
    cache_path = tmp_path / "cache.npy"
    build_image_cache(manifest_path, "L", 28, cache_path)

    from_pixels = image_set(images, "L", 28)
    from_cache = image_set(images, "L", 28, cache_path, manifest_path)
    assert from_pixels._source[0] == "pixels" and from_cache._source[0] == "cache"
    positions = np.arange(len(images))[::-1]
    expected = np.stack([image_array(ImageReader(images, "L")[i], 28) for i in positions])
    np.testing.assert_array_equal(from_pixels.gather(positions).numpy(), expected)
    np.testing.assert_array_equal(from_cache.gather(positions).numpy(), expected)
    # At another size the rows are decoded (and resized) instead.
    resized = ImageTensors(images, "L", 14)
    assert resized._source[0] == "files"
    resized.decode_all()
    np.testing.assert_array_equal(resized.gather([0]).numpy()[0], image_array(ImageReader(images, "L")[0], 14))


def test_pixels_are_cache_matches_the_native_arrays(tmp_path):
    manifest_path = tmp_path / "digits" / "manifest.parquet"
    prepare_dataset("digits", manifest_path)
    pixels = np.load(manifest_path.parent / "pixels.npy", mmap_mode="r")
    assert pixels.shape[1] == NATIVE_SIZES["digits"]
    assert pixels_are_cache("digits", "L", pixels.shape[1])
    assert not pixels_are_cache("digits", "RGB", pixels.shape[1]) and not pixels_are_cache("digits", "L", 32)
    assert not pixels_are_cache("caltech101", "RGB", 224)
