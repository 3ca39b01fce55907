"""Folder datasets: a manifest frame pointing at image files, one folder per class
(image folders, Caltech-101), or a labels table naming each file's classes (multi-label)."""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from cbir.datasets.images import IMAGE_EXTENSIONS, printable_path

log = logging.getLogger(__name__)

#: What separates the class names in the ``labels`` field of a multi-label dataset's labels table.
LABEL_DELIMITER = ";"


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


def list_images(folder: Path, skipped: list[Path], recursive: bool = False) -> list[Path]:
    """The image files in ``folder`` (with ``recursive``, at any depth below it); every other
    file is added to ``skipped``, to be reported."""
    files = _files_under(folder) if recursive else sorted(p for p in folder.iterdir() if not p.is_dir())
    _check_entries(files)
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    skipped += [p for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]
    return images


def report_skipped(skipped: list[Path], root: Path) -> None:
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
        for image in list_images(class_dir, skipped, recursive=True)
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
    report_skipped(skipped, root)
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
    report_skipped(skipped, candidate)
    return _folder_manifest(rows, candidate)


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


LOADERS = {"caltech101": _load_caltech101, "imagefolder": _load_imagefolder}
