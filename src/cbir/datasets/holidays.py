"""INRIA Holidays: 1,491 photos in 500 groups, the image ending in 00 each group's query."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from cbir.datasets.folders import list_images, report_skipped

log = logging.getLogger(__name__)

HOLIDAYS_URLS = {
    "jpg1.tar.gz": "ftp://ftp.inrialpes.fr/pub/lear/douze/data/jpg1.tar.gz",
    "jpg2.tar.gz": "ftp://ftp.inrialpes.fr/pub/lear/douze/data/jpg2.tar.gz",
}
HOLIDAYS_N_IMAGES, HOLIDAYS_N_GROUPS = 1491, 500


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


def load_holidays(root, download_dir, checksums):
    folder = Path(root) if root is not None else _download_holidays(download_dir, checksums)
    if (folder / "jpg").is_dir():
        folder = folder / "jpg"
    skipped: list[Path] = []
    images = list_images(folder, skipped)
    report_skipped(skipped, folder)
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
