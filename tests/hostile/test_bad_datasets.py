"""Broken and careless dataset folders: a bad file stops the dataset stage naming it, leaving no
manifest; a file that is not read is reported, never dropped in silence."""

from __future__ import annotations

import gzip
import logging
import os
import struct

import numpy as np
import pytest
import yaml
from PIL import Image

from cbir.datasets import prepare_dataset

from conftest import REPO
from workflow import snakemake


def image_folder(root):
    """A small valid folder of images: two classes of six."""
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / cls / f"{i}.jpg")
    return root


def truncated_jpeg(root):
    data = (root / "cats/0.jpg").read_bytes()
    (root / "cats/0.jpg").write_bytes(data[: len(data) // 2])
    return "cats/0.jpg"


def empty_file(root):
    (root / "cats/1.jpg").write_bytes(b"")
    return "cats/1.jpg"


def text_as_image(root):
    (root / "dogs/2.jpg").write_text("not an image")
    return "dogs/2.jpg"


def png_header_only(root):
    (root / "dogs/3.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return "dogs/3.png"


def gif_bytes_named_jpeg(root):
    (root / "dogs/4.jpg").write_bytes(b"GIF89a" + b"\x00" * 10)
    return "dogs/4.jpg"


def jpeg_garbage_tail(root):
    data = (root / "dogs/5.jpg").read_bytes()
    (root / "dogs/5.jpg").write_bytes(data[:200] + os.urandom(64))
    return "dogs/5.jpg"


def dangling_image_link(root):
    os.symlink(root / "nowhere.jpg", root / "cats/linked.jpg")
    return "cats/linked.jpg"


def dangling_class_link(root):
    os.symlink(root / "no-such-class", root / "birds")
    return "birds"


def dangling_link_in_a_subfolder(root):
    (root / "cats/indoor").mkdir()
    os.symlink(root / "gone.png", root / "cats/indoor/linked.png")
    return "cats/indoor/linked.png"


def non_utf8_name(root):
    data = (root / "cats/2.jpg").read_bytes()
    with open(os.path.join(os.fsencode(root / "cats"), b"caf\xe9.jpg"), "wb") as handle:
        handle.write(data)
    return "caf\\xe9.jpg"


def broken_gif(root):
    (root / "cats/moving.gif").write_bytes(b"GIF89a\x10\x00\x10\x00")
    return "cats/moving.gif"


FOLDER_CASES = {
    "truncated JPEG": truncated_jpeg,
    "empty image file": empty_file,
    "text file named .jpg": text_as_image,
    "PNG with only its signature": png_header_only,
    "GIF bytes named .jpg": gif_bytes_named_jpeg,
    "JPEG with a garbage tail": jpeg_garbage_tail,
    "dangling symlink to an image": dangling_image_link,
    "dangling symlink as a class folder": dangling_class_link,
    "dangling symlink in a subfolder": dangling_link_in_a_subfolder,
    "file name that is not UTF-8": non_utf8_name,
    "GIF cut short": broken_gif,
}


def idx_images(n: int) -> bytes:
    return struct.pack(">IIII", 2051, n, 28, 28) + bytes(n * 28 * 28)


def idx_labels(n: int) -> bytes:
    return struct.pack(">II", 2049, n) + bytes(n)


def mnist_copy(root):
    """A tiny MNIST copy in torchvision's layout; returns its raw/ folder."""
    raw = root / "MNIST/raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 60), ("t10k", 20)):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(idx_images(n))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_labels(n))
    return raw


def mnist_missing(raw):
    (raw / "t10k-labels-idx1-ubyte").unlink()
    return "t10k-labels-idx1-ubyte"


def mnist_truncated(raw):
    (raw / "train-images-idx3-ubyte").write_bytes((raw / "train-images-idx3-ubyte").read_bytes()[:1000])
    return "train-images-idx3-ubyte"


def mnist_bad_magic(raw):
    data = bytearray((raw / "train-labels-idx1-ubyte").read_bytes())
    data[:4] = struct.pack(">I", 1234)
    (raw / "train-labels-idx1-ubyte").write_bytes(bytes(data))
    return "train-labels-idx1-ubyte"


def mnist_count_mismatch(raw):
    (raw / "t10k-labels-idx1-ubyte").write_bytes(idx_labels(19))
    return "t10k"


def mnist_bad_gzip(raw):
    (raw / "train-images-idx3-ubyte").unlink()
    (raw / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_images(60))[:50])
    return "train-images-idx3-ubyte.gz"


MNIST_CASES = {
    "file missing": mnist_missing,
    "images truncated": mnist_truncated,
    "labels with a wrong magic number": mnist_bad_magic,
    "images and labels of different counts": mnist_count_mismatch,
    ".gz file cut short": mnist_bad_gzip,
}


#: case -> (dataset kind, a good copy of it, the damage done to it)
CASES = {
    **{f"image folder: {name}": ("imagefolder", image_folder, damage) for name, damage in FOLDER_CASES.items()},
    **{f"MNIST: {name}": ("mnist", mnist_copy, damage) for name, damage in MNIST_CASES.items()},
}


@pytest.mark.parametrize("case", sorted(CASES), ids=sorted(CASES))
def test_a_bad_copy_is_refused_naming_the_file(tmp_path, case):
    kind, make, damage = CASES[case]
    named = damage(make(tmp_path / "data"))
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        prepare_dataset(kind, tmp_path / "out" / "manifest.parquet", root=str(tmp_path / "data"))
    assert named in str(info.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # no manifest, no pixels, no temporary file


# Nothing dropped in silence.


def test_images_in_subfolders_belong_to_their_class_folder(tmp_path):
    root = image_folder(tmp_path / "photos")
    (root / "cats" / "indoor" / "sofa").mkdir(parents=True)
    Image.new("RGB", (9, 9), "red").save(root / "cats" / "indoor" / "sofa" / "deep.png")
    Image.new("RGB", (9, 9), "blue").save(root / "dogs" / "moving.gif")
    manifest = prepare_dataset("imagefolder", tmp_path / "out" / "manifest.parquet", root=str(root))
    rows = manifest.set_index("image_id")
    assert rows.loc["cats/indoor/sofa/deep.png", "class_name"] == "cats"
    assert rows.loc["dogs/moving.gif", "class_name"] == "dogs"
    assert sorted(manifest["class_name"].unique()) == ["cats", "dogs"] and len(manifest) == 14


def test_files_that_are_not_images_are_reported(tmp_path, caplog):
    root = image_folder(tmp_path / "photos")
    (root / "cats" / "notes.txt").write_text("not an image")
    (root / "dogs" / "raw").mkdir()
    (root / "dogs" / "raw" / "shot.cr2").write_bytes(b"raw camera data")
    (root / "README.md").write_text("a file beside the class folders")
    with caplog.at_level(logging.INFO, logger="cbir.datasets"):
        manifest = prepare_dataset("imagefolder", tmp_path / "out" / "manifest.parquet", root=str(root))
    assert len(manifest) == 12
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("3 file(s) under")
    assert all(name in warnings[0] for name in ("cats/notes.txt", "dogs/raw/shot.cr2", "README.md"))
    named = {r.getMessage().rsplit("/", 1)[-1] for r in caplog.records if r.levelno == logging.INFO and r.getMessage().startswith("skipped")}
    assert named == {"notes.txt", "shot.cr2", "README.md"}


def test_the_dataset_stage_reports_skipped_files_in_its_log(tmp_path):
    root = image_folder(tmp_path / "photos")
    (root / "cats" / "notes.txt").write_text("not an image")
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    config = {
        "seeds": [0],
        "datasets": {"photos": {"kind": "imagefolder", "root": str(root), "protocol": "p", "hashing": ["smallcnn"]}},
        "protocols": {"p": {"kind": "per_class", "database_per_class": 4, "query_per_class": 1}},
        "backbones": base["backbones"],
    }
    (tmp_path / "photos.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "--cores", "1", "resources/datasets/photos/manifest.parquet", configfile=tmp_path / "photos.yaml")
    log = (tmp_path / "results/logs/datasets/photos.log").read_text()
    assert "WARNING" in log and "1 file(s) under" in log and "cats/notes.txt" in log
    assert "cats/notes.txt" in result.stdout + result.stderr  # the warning reaches the terminal too
