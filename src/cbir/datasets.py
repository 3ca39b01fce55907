"""Datasets: download or read a local copy, write a manifest, and read images back.

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

import csv
import gzip
import hashlib
import io
import logging
import os
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from PIL import Image

from cbir.config import PIXEL_ARRAY_KINDS
from cbir.io import atomic_output, read_parquet, write_parquet
from cbir.restricted_pickle import load_plain_pickle

log = logging.getLogger(__name__)


MANIFEST_COLUMNS = ["image_id", "label", "class_name", "split", "path", "index"]
#: What separates the class names in the ``labels`` field of a multi-label dataset's labels table.
LABEL_DELIMITER = ";"

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

HOLIDAYS_URLS = {
    "jpg1.tar.gz": "ftp://ftp.inrialpes.fr/pub/lear/douze/data/jpg1.tar.gz",
    "jpg2.tar.gz": "ftp://ftp.inrialpes.fr/pub/lear/douze/data/jpg2.tar.gz",
}
HOLIDAYS_N_IMAGES, HOLIDAYS_N_GROUPS = 1491, 500


# --------------------------------------------------------------------------------------------
# Preparing a dataset
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Array datasets: return (pixels N x H x W x C uint8, labels, splits, class names)
# --------------------------------------------------------------------------------------------


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


_ARRAY_LOADERS = {"digits": _load_digits, "mnist": _load_mnist, "fashion_mnist": _load_fashion_mnist, "cifar10": _load_cifar10}


# --------------------------------------------------------------------------------------------
# File datasets: return a manifest frame pointing at image files
# --------------------------------------------------------------------------------------------


#: File name extensions read as images: torchvision's ImageFolder list (copied, so that the
#: dataset stage need not import torchvision, about 1.6 s), and GIF (its first frame).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


def printable_path(path) -> str:
    """A path for messages and logs: bytes that are not UTF-8 shown as ``\\xff`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _check_entries(entries: list[Path]) -> None:
    """Fail on links that lead nowhere and on names that are not UTF-8 (Parquet stores UTF-8)."""
    dangling = [p for p in entries if p.is_symlink() and not p.exists()]
    if dangling:
        raise FileNotFoundError(f"{len(dangling)} broken symbolic link(s): " + "; ".join(printable_path(p) for p in dangling[:10]))
    undecodable = []
    for p in entries:
        try:
            str(p).encode("utf-8")
        except UnicodeEncodeError:
            undecodable.append(printable_path(p))
    if undecodable:
        raise ValueError(f"{len(undecodable)} file name(s) that are not valid UTF-8 (rename them): " + "; ".join(undecodable[:10]))


def _files_under(folder: Path) -> list[Path]:
    """Every file under ``folder``, at any depth (through linked folders), sorted."""
    files = []
    for parent, dirs, names in os.walk(folder, followlinks=True):
        dirs.sort()
        entries = [Path(parent) / name for name in (*dirs, *names)]
        _check_entries(entries)
        files += [Path(parent) / name for name in names]
    return sorted(files)


def _list_images(folder: Path, skipped: list[Path], recursive: bool = False) -> list[Path]:
    """The image files in ``folder`` (with ``recursive``, at any depth below it); every other
    file is added to ``skipped``, to be reported."""
    files = _files_under(folder) if recursive else sorted(p for p in folder.iterdir() if not p.is_dir())
    _check_entries(files)
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    skipped += [p for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]
    return images


def _report_skipped(skipped: list[Path], root: Path) -> None:
    """Files that are not read as images: each named in the stage's log, and a warning."""
    if not skipped:
        return
    for path in skipped:
        log.info("skipped (not an image file by its extension): %s", printable_path(path))
    kinds = ", ".join(sorted({p.suffix.lower() or "(no extension)" for p in skipped}))
    log.warning(
        "%d file(s) under %s are not read as images (extensions %s; images are %s): %s%s",
        len(skipped), printable_path(root), kinds, " ".join(IMAGE_EXTENSIONS),
        "; ".join(printable_path(p.relative_to(root)) for p in skipped[:10]), " ..." if len(skipped) > 10 else "",
    )


def _folder_rows(class_parent: Path, split: str, id_root: Path, skipped: list[Path], skip: tuple[str, ...] = ()) -> list[dict]:
    """One row per image under ``class_parent/<class>/``, at any depth (the class is the first
    folder level); ids are paths relative to ``id_root``. Files directly in ``class_parent``
    belong to no class: they are added to ``skipped``."""
    entries = sorted(d for d in class_parent.iterdir() if d.name not in skip)
    _check_entries([d for d in entries if d.is_symlink()])
    skipped += [d for d in entries if not d.is_dir()]
    return [
        {"class_name": class_dir.name, "split": split, "path": str(image), "image_id": image.relative_to(id_root).as_posix()}
        for class_dir in entries
        if class_dir.is_dir()
        for image in _list_images(class_dir, skipped, recursive=True)
    ]


def _folder_manifest(rows: list[dict], root: Path) -> pd.DataFrame:
    if not rows:
        raise FileNotFoundError(f"no images found under {root} (expected <class>/<image> files)")
    frame = pd.DataFrame(rows)
    classes = sorted(frame["class_name"].unique())
    frame["label"] = frame["class_name"].map({c: i for i, c in enumerate(classes)}).astype(np.int64)
    frame["index"] = np.int64(-1)
    return frame


def _load_imagefolder(root, download_dir, checksums):
    """``root/<class>/**/<image>``, or ``root/train/<class>/...`` and ``root/test/<class>/...``:
    images in folders below a class folder belong to that class."""
    root = Path(root)
    skipped: list[Path] = []
    if (root / "train").is_dir():
        rows = [row for split in ("train", "test") if (root / split).is_dir() for row in _folder_rows(root / split, split, root, skipped)]
        skipped += [p for p in root.iterdir() if p.name not in ("train", "test")]
    else:
        rows = _folder_rows(root, "train", root, skipped)
    _report_skipped(skipped, root)
    return _folder_manifest(rows, root)


def _load_caltech101(root, download_dir, checksums):
    if root is None:
        from torchvision.datasets import Caltech101

        Caltech101(str(download_dir), download=True)
        root = download_dir
    root = Path(root)
    for candidate in (root / "caltech101" / "101_ObjectCategories", root / "101_ObjectCategories", root):
        if candidate.is_dir() and any(p.is_dir() for p in candidate.iterdir()):
            break
    else:
        raise FileNotFoundError(f"no 101_ObjectCategories folder under {root}")
    # As torchvision does, the BACKGROUND_Google clutter class is not a category.
    skipped: list[Path] = []
    rows = _folder_rows(candidate, "train", candidate, skipped, skip=("BACKGROUND_Google",))
    _report_skipped(skipped, candidate)
    return _folder_manifest(rows, candidate)


def sha256sum(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download_holidays(download_dir: Path, checksums: dict) -> Path:
    from torchvision.datasets.utils import download_url, extract_archive

    download_dir.mkdir(parents=True, exist_ok=True)
    for name, url in HOLIDAYS_URLS.items():
        archive = download_dir / name
        if not archive.is_file():
            log.info("downloading %s", url)
            download_url(url, str(download_dir), filename=name)
        digest = sha256sum(archive)
        expected = checksums.get(name)
        if expected is not None and digest != expected:
            archive.unlink()
            raise ValueError(f"checksum mismatch for {archive}: sha256 {digest}, expected {expected}; the file was removed, run again to re-download")
        log.info("%s sha256 %s%s", name, digest, "" if expected else " (no expected checksum configured)")
        extract_archive(str(archive), str(download_dir))
    return download_dir / "jpg"


def _load_holidays(root, download_dir, checksums):
    folder = Path(root) if root is not None else _download_holidays(download_dir, checksums)
    if (folder / "jpg").is_dir():
        folder = folder / "jpg"
    skipped: list[Path] = []
    images = _list_images(folder, skipped)
    _report_skipped(skipped, folder)
    if not images:
        raise FileNotFoundError(f"no Holidays images (e.g. 100000.jpg) found in {folder}")
    bad = [p.name for p in images if not (len(p.stem) == 6 and p.stem.isdigit())]
    if bad:
        raise ValueError(f"unexpected Holidays file names in {folder} (expected six digits, e.g. 100000.jpg): {bad[:5]}")
    # The group is the first four digits; the image ending in 00 is the group's query.
    groups = sorted({p.stem[:4] for p in images})
    frame = pd.DataFrame(
        {
            "image_id": [p.name for p in images],
            "class_name": [p.stem[:4] for p in images],
            "split": ["test" if p.stem.endswith("00") else "train" for p in images],
            "path": [str(p) for p in images],
        }
    )
    frame["label"] = frame["class_name"].map({g: i for i, g in enumerate(groups)}).astype(np.int64)
    frame["index"] = np.int64(-1)
    queries = frame.groupby("class_name")["split"].apply(lambda s: (s == "test").sum())
    if (queries != 1).any():
        raise ValueError(f"every Holidays group needs exactly one query image ending in 00; groups without: {queries[queries != 1].index[:5].tolist()}")
    if root is None and (len(frame) != HOLIDAYS_N_IMAGES or len(groups) != HOLIDAYS_N_GROUPS):
        raise ValueError(f"downloaded Holidays has {len(frame)} images in {len(groups)} groups, expected {HOLIDAYS_N_IMAGES} in {HOLIDAYS_N_GROUPS}")
    return frame


_FILE_LOADERS = {"caltech101": _load_caltech101, "holidays": _load_holidays, "imagefolder": _load_imagefolder}


def read_labels_table(path: str | os.PathLike, root: str | os.PathLike) -> pd.DataFrame:
    """The manifest of a multi-label dataset: the images under ``root`` that the labels table
    ``path`` lists, with their ``labels``.

    The table is a UTF-8 CSV file with a header row naming (at least) the columns ``file``, an
    image's path relative to ``root``, and ``labels``, its class names separated by ``;``
    (:data:`LABEL_DELIMITER`), e.g. ``beach/0001.jpg,sky;water;person``. The first name listed is
    the image's ``label``, the one per-class protocols and classifiers read. Class numbers follow
    the sorted class names. Nothing in it is evaluated; a row that is malformed, names a file
    outside ``root`` or missing, or gives no label, is an error naming the table and its line.
    """
    path, root = Path(path), Path(root)
    if not path.is_file():
        raise FileNotFoundError(f"missing labels table: {printable_path(path)}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # spreadsheets write a byte-order mark
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ValueError(f"{printable_path(path)}, line {line}: not UTF-8 text ({err.reason})") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    image_ids, files, names_of, line_of = [], [], [], {}

    def bad(message: str) -> ValueError:
        return ValueError(f"{printable_path(path)}, line {max(reader.line_num, 1)}: {message}")

    try:
        header = [name.strip() for name in next(reader, [])]
        if "file" not in header or "labels" not in header or len(set(header)) != len(header):
            raise bad(f"the header must name the columns `file` and `labels` once each, got {header}")
        at_file, at_labels = header.index("file"), header.index("labels")
        for row in reader:
            if not row:
                continue  # a blank line
            if len(row) != len(header):
                raise bad(f"{len(row)} fields, the header has {len(header)} ({','.join(header)})")
            file, names = row[at_file], list(dict.fromkeys(name.strip() for name in row[at_labels].split(LABEL_DELIMITER)))
            relative = PurePosixPath(file)
            if not file or "\0" in file or relative.is_absolute() or ".." in relative.parts:
                raise bad(f"file {file!r} is not a path inside the dataset root {printable_path(root)}, relative to it")
            try:
                found = (root / relative).is_file()
            except OSError as err:  # a name too long, say
                raise bad(f"cannot read {file!r}: {err}") from None
            if not found:
                raise bad(f"no image file {printable_path(root / relative)}")
            if not all(names):
                raise bad(f"labels {row[at_labels]!r}: an empty class name (give one class or more, separated by {LABEL_DELIMITER!r})")
            image_id = relative.as_posix()
            if image_id in line_of:
                raise bad(f"{image_id} is listed twice (first on line {line_of[image_id]})")
            line_of[image_id] = reader.line_num
            image_ids.append(image_id)
            files.append(str(root / relative))
            names_of.append(names)
    except csv.Error as err:
        raise bad(str(err)) from None
    if not image_ids:
        raise ValueError(f"{printable_path(path)}: lists no images")
    number = {name: i for i, name in enumerate(sorted({name for names in names_of for name in names}))}
    return pd.DataFrame(
        {
            "image_id": image_ids,
            "label": np.array([number[names[0]] for names in names_of], dtype=np.int64),
            "class_name": [names[0] for names in names_of],
            "split": "train",
            "path": files,
            "index": np.int64(-1),
            "labels": [sorted(number[name] for name in names) for names in names_of],
        }
    )


# --------------------------------------------------------------------------------------------
# Reading images
# --------------------------------------------------------------------------------------------


#: What Pillow raises for files it cannot decode (DecompressionBombError for absurd sizes).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def _decode_error(path) -> str | None:
    try:
        load_image(path)
    except DECODE_ERRORS as err:
        return f"{printable_path(path)} ({err.__class__.__name__}: {err})"
    return None


def check_images(paths, threads: int | None = None) -> None:
    """Fail, naming the files, if any image is missing or cannot be decoded in full.

    A full decode, not Pillow's ``verify()``, which does not notice truncated JPEGs: a bad file
    stops the dataset stage instead of a fine-tuning job hours later. Decoders release the GIL,
    so threads decode in parallel.
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads or min(8, os.cpu_count() or 1)) as pool:
        bad = [error for error in pool.map(_decode_error, paths) if error]
    if bad:
        raise ValueError(f"{len(bad)} unreadable image file(s): " + "; ".join(bad[:10]) + (" ..." if len(bad) > 10 else ""))


def load_image(path) -> Image.Image:
    """The decoded image of a file, detached from it: usable after the file is closed.
    Raises OSError (or another of ``DECODE_ERRORS``) when it cannot be decoded."""
    with Image.open(path) as opened:
        opened.load()
        return opened.copy()


#: Pillow's modes for 16-bit grayscale; ``I`` (32-bit integers) is how some Pillow versions and
#: formats open 16-bit PNG and TIFF files, so it is read as 16-bit too.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit grayscale scaled to 8 bits (Pillow's own conversion clips everything above 255)."""
    pixels = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
    return Image.fromarray(((pixels * 255 + 32767) // 65535).astype(np.uint8))


def to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Convert to ``mode`` ('L' or 'RGB'); transparent pixels are composited onto white, 16-bit
    grayscale is scaled to 8 bits."""
    if image.mode in SIXTEEN_BIT_MODES:
        image = _to_8bit(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image if image.mode == mode else image.convert(mode)


def image_array(image: Image.Image, size: int) -> np.ndarray:
    """A PIL image (already in its target mode) as a uint8 C x size x size array; bilinear
    resize with antialiasing when shrinking, as torchvision's Resize on PIL images."""
    if image.size != (size, size):
        image = image.resize((size, size), resample=Image.Resampling.BILINEAR)
    pixels = np.array(image, dtype=np.uint8)  # a writable copy
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


class ImageReader:
    """Reads the images of a manifest by row, converted to one colour mode.

    ``reader[i]`` returns a PIL image for manifest row ``i``. Pixel arrays are memory-mapped, so a
    reader is cheap to create in every data-loader worker.
    """

    def __init__(self, manifest: pd.DataFrame, mode: str = "RGB"):
        if mode not in ("L", "RGB"):
            raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
        self.paths = manifest["path"].to_numpy()
        self.index = manifest["index"].to_numpy()
        self.mode = mode
        self._arrays: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def _array(self, path: str) -> np.ndarray:
        if path not in self._arrays:
            try:
                self._arrays[path] = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as err:
                raise ValueError(f"cannot read pixel array {path}: {err}") from err
        return self._arrays[path]

    def __getitem__(self, row: int) -> Image.Image:
        path, index = self.paths[row], int(self.index[row])
        if index >= 0:
            pixels = np.asarray(self._array(path)[index])
            image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
        else:
            try:
                image = load_image(path)
            except DECODE_ERRORS as err:
                raise ValueError(f"cannot read image {printable_path(path)}: {err}") from err
        return to_mode(image, self.mode)
