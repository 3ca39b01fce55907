"""Array datasets (digits, MNIST, Fashion-MNIST, CIFAR-10): each loader returns (pixels
N x H x W x C uint8, labels, splits, class names) from a local copy in the source's own format,
or downloads it through torchvision when no copy is given."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from cbir.restricted_pickle import load_plain_pickle

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _load_digits(root, download_dir):
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 4-bit intensities (0..16) stretched to 8 bits.
    pixels = np.clip(digits.images * 16, 0, 255).astype(np.uint8)[..., None]
    splits = np.full(len(pixels), "train", dtype=object)
    return pixels, digits.target, splits, [str(c) for c in range(10)]


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or not."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"cannot read IDX file {path}: {err}") from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise ValueError(f"{path} is truncated or corrupt: {len(data)} bytes, expected {expected} for shape {shape}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _find_idx(root: Path, folder: str, stem: str) -> Path:
    for directory in (root / folder / "raw", root / "raw", root):
        for name in (stem, stem + ".gz"):
            if (directory / name).is_file():
                return directory / name
    raise FileNotFoundError(f"{stem}[.gz] not found under {root} (looked in {folder}/raw/, raw/ and the root itself)")


def _mnist_like(root, download_dir, folder: str, classes: list[str]):
    """MNIST and Fashion-MNIST; ``folder`` is also the name of torchvision's dataset class."""
    if root is None:
        import torchvision.datasets  # only to download: importing torchvision takes about 1.6 s

        dataset_class = {"MNIST": torchvision.datasets.MNIST, "FashionMNIST": torchvision.datasets.FashionMNIST}[folder]
        dataset_class(str(download_dir), train=True, download=True)
        dataset_class(str(download_dir), train=False, download=True)
        root = download_dir
    root = Path(root)
    parts = []
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(_find_idx(root, folder, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_find_idx(root, folder, f"{prefix}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{prefix} images {images.shape} and labels {labels.shape} under {root} do not match")
        parts.append((images, labels, np.full(len(labels), split, dtype=object)))
    pixels = np.concatenate([p[0] for p in parts])[..., None]
    labels = np.concatenate([p[1] for p in parts]).astype(np.int64)
    if labels.max() >= len(classes):
        raise ValueError(f"labels under {root} exceed the {len(classes)} classes")
    return pixels, labels, np.concatenate([p[2] for p in parts]), classes


def _load_mnist(root, download_dir):
    return _mnist_like(root, download_dir, "MNIST", [str(c) for c in range(10)])


def _load_fashion_mnist(root, download_dir):
    return _mnist_like(root, download_dir, "FashionMNIST", FASHION_MNIST_CLASSES)


def _unpickle(path: Path) -> dict:
    """A CIFAR-10 batch (a pickled dict of arrays and lists), read without running code."""
    batch = load_plain_pickle(path, "CIFAR-10 file")
    if not isinstance(batch, dict):
        raise ValueError(f"corrupt CIFAR-10 file {path}: a {type(batch).__name__}, not a dict")
    return batch


def _load_cifar10(root, download_dir):
    if root is None:
        from torchvision.datasets import CIFAR10

        CIFAR10(str(download_dir), train=True, download=True)
        root = download_dir
    root = Path(root)
    folder = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    meta = _unpickle(folder / "batches.meta")
    classes = meta.get("label_names")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ValueError(f"corrupt CIFAR-10 file {folder / 'batches.meta'}: no list of class names under 'label_names'")
    parts = []
    for split, names in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        for name in names:
            batch = _unpickle(folder / name)
            try:
                images = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
                labels = np.asarray(batch["labels"], dtype=np.int64)
            except (KeyError, ValueError) as err:
                raise ValueError(f"corrupt CIFAR-10 file {folder / name}: {err}") from err
            if len(images) != len(labels):
                raise ValueError(f"corrupt CIFAR-10 file {folder / name}: {len(images)} images but {len(labels)} labels")
            parts.append((images, labels, np.full(len(labels), split, dtype=object)))
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
        list(classes),
    )


LOADERS = {"digits": _load_digits, "mnist": _load_mnist, "fashion_mnist": _load_fashion_mnist, "cifar10": _load_cifar10}
