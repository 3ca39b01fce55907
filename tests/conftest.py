"""Shared fixtures: tiny datasets in each source's on-disk format, built on the fly."""

from __future__ import annotations

import fcntl
import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """Write a uint8 array in the IDX format of MNIST."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)


def make_mnist(root: Path, n_train: int = 60, n_test: int = 20, folder: str = "MNIST/raw", compress: bool = False, seed: int = 0) -> Path:
    """A tiny MNIST copy: torchvision's layout (root/MNIST/raw/...) or a flat one (folder='')."""
    rng = np.random.default_rng(seed)
    raw = root / folder if folder else root
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), compress)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, compress)
    return root


def make_cifar10(root: Path, per_batch: int = 20, n_test: int = 20, seed: int = 0) -> Path:
    """A tiny CIFAR-10 copy in torchvision's cifar-10-batches-py layout."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": names}, handle)
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        with open(folder / name, "wb") as handle:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": list(np.arange(n) % 10)}, handle)
    return root


def save_image(path: Path, mode: str, size=(12, 10), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    channels = {"L": 1, "RGB": 3, "RGBA": 4, "CMYK": 4}[mode]
    pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    if mode == "CMYK":
        image = Image.frombytes("CMYK", size, pixels.tobytes())
    else:
        image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def make_caltech101(root: Path, classes=("accordion", "airplanes", "anchor"), per_class: int = 6) -> Path:
    """A tiny Caltech-101 copy in torchvision's layout, with a grayscale image and the clutter class."""
    categories = root / "caltech101" / "101_ObjectCategories"
    for c, name in enumerate(classes):
        for i in range(per_class):
            save_image(categories / name / f"image_{i + 1:04d}.jpg", "L" if i == 0 else "RGB", seed=c * 100 + i)
    save_image(categories / "BACKGROUND_Google" / "image_0001.jpg", "RGB")
    return root


def make_holidays(root: Path, groups: int = 4, per_group: int = 3) -> Path:
    """A Holidays-like folder: <group><nn>.jpg, the image ending in 00 is the group's query."""
    for g in range(groups):
        for i in range(per_group):
            save_image(root / "jpg" / f"{1000 + g * 2}{i:02d}.jpg", "RGB", seed=g * 10 + i)
    return root


@pytest.fixture
def mnist_root(tmp_path):
    return make_mnist(tmp_path / "mnist")


@pytest.fixture
def cifar_root(tmp_path):
    return make_cifar10(tmp_path / "cifar")


@pytest.fixture
def caltech_root(tmp_path):
    return make_caltech101(tmp_path / "caltech")


@pytest.fixture
def holidays_root(tmp_path):
    return make_holidays(tmp_path / "holidays")


@pytest.fixture
def imagefolder_root(tmp_path):
    """root/<class>/<image> with grayscale, RGBA, CMYK and RGB images."""
    root = tmp_path / "photos"
    save_image(root / "cats" / "gray.png", "L")
    save_image(root / "cats" / "alpha.png", "RGBA", seed=1)
    save_image(root / "dogs" / "cmyk.jpg", "CMYK", seed=2)
    save_image(root / "dogs" / "rgb.jpg", "RGB", seed=3)
    (root / "dogs" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="session")
def default_run(tmp_path_factory, worker_id):
    """The embedded default workflow (config.yaml), run once for every test that reads it, also
    across pytest-xdist workers: the first to need it runs it under a file lock, the others wait."""
    from workflow import snakemake

    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        root = root.parent  # shared by the workers of this session
    workdir = root / "default-run"
    with open(root / "default-run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (workdir / ".complete").exists():
            workdir.mkdir(exist_ok=True)
            snakemake(workdir, "--cores", "2")
            (workdir / ".complete").touch()
    return workdir


def pytest_collection_modifyitems(items):
    """The long SLURM test first, the tests that read the default run last: the workers work on
    the rest while the default run is being made."""
    def order(item):
        fixtures = getattr(item, "fixturenames", ())
        return 0 if "test_cluster" in item.nodeid else 2 if "default_run" in fixtures else 1

    items.sort(key=order)
