"""Dataset loaders read local copies in their on-disk formats, and fail naming the bad file."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from cbir.datasets import ImageReader, prepare_dataset, read_idx, read_manifest

from conftest import make_mnist, save_image


def prepare(kind, root, tmp_path):
    return prepare_dataset(kind, tmp_path / "out" / "manifest.parquet", root=str(root) if root else None)


def test_digits_is_bundled(tmp_path):
    manifest = prepare("digits", None, tmp_path)
    assert len(manifest) == 1797
    assert sorted(manifest["label"].unique()) == list(range(10))
    assert (manifest["split"] == "train").all()
    pixels = np.load(tmp_path / "out" / "pixels.npy")
    assert pixels.shape == (1797, 8, 8, 1) and pixels.dtype == np.uint8
    assert pixels.max() > 200  # 4-bit intensities were stretched to 8 bits


@pytest.mark.parametrize(
    "layout", [{"folder": "MNIST/raw"}, {"folder": "raw"}, {"folder": "", "compress": True}], ids=["torchvision", "raw", "flat-gz"]
)
def test_mnist_layouts(tmp_path, layout):
    root = make_mnist(tmp_path / "src", **layout)
    manifest = prepare("mnist", root, tmp_path)
    assert manifest["split"].value_counts().to_dict() == {"train": 60, "test": 20}
    assert manifest["image_id"].iloc[0] == "train/00000" and manifest["image_id"].iloc[60] == "test/00000"
    reader = ImageReader(read_manifest(tmp_path / "out" / "manifest.parquet"), mode="L")
    first = np.asarray(reader[0])
    expected = read_idx(next((root).rglob("train-images-idx3-ubyte*")))[0]
    np.testing.assert_array_equal(first, expected)


def test_fashion_mnist_class_names(tmp_path):
    root = make_mnist(tmp_path / "src", folder="FashionMNIST/raw")
    manifest = prepare("fashion_mnist", root, tmp_path)
    assert manifest.loc[manifest["label"] == 9, "class_name"].iloc[0] == "Ankle boot"


def test_cifar10_layout(tmp_path, cifar_root):
    manifest = prepare("cifar10", cifar_root, tmp_path)
    assert manifest["split"].value_counts().to_dict() == {"train": 100, "test": 20}
    assert manifest.loc[manifest["label"] == 0, "class_name"].iloc[0] == "airplane"
    image = ImageReader(manifest, mode="RGB")[0]
    assert image.size == (32, 32) and image.mode == "RGB"


def test_caltech101_layout_skips_clutter_and_converts_grayscale(tmp_path, caltech_root):
    manifest = prepare("caltech101", caltech_root, tmp_path)
    assert sorted(manifest["class_name"].unique()) == ["accordion", "airplanes", "anchor"]
    assert len(manifest) == 18
    reader = ImageReader(manifest, mode="RGB")
    gray_row = manifest.index[manifest["image_id"] == "accordion/image_0001.jpg"][0]
    with Image.open(manifest.loc[gray_row, "path"]) as raw:
        assert raw.mode == "L"
    assert reader[gray_row].mode == "RGB"


def test_holidays_groups_and_queries(tmp_path, holidays_root):
    manifest = prepare("holidays", holidays_root, tmp_path)
    assert len(manifest) == 12 and manifest["label"].nunique() == 4
    queries = manifest[manifest["split"] == "test"]
    assert sorted(queries["image_id"]) == ["100000.jpg", "100200.jpg", "100400.jpg", "100600.jpg"]
    assert manifest.loc[manifest["image_id"] == "100201.jpg", "class_name"].item() == "1002"


def test_holidays_group_without_query_is_an_error(tmp_path, holidays_root):
    (holidays_root / "jpg" / "100200.jpg").unlink()
    with pytest.raises(ValueError, match="1002"):
        prepare("holidays", holidays_root, tmp_path)


def test_imagefolder_modes(tmp_path, imagefolder_root):
    manifest = prepare("imagefolder", imagefolder_root, tmp_path)
    assert sorted(manifest["image_id"]) == ["cats/alpha.png", "cats/gray.png", "dogs/cmyk.jpg", "dogs/rgb.jpg"]
    for mode in ("RGB", "L"):
        reader = ImageReader(manifest, mode=mode)
        assert {reader[i].mode for i in range(len(manifest))} == {mode}
    # Transparent pixels become white, not black.
    clear = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    clear.save(imagefolder_root / "cats" / "alpha.png")
    row = manifest.index[manifest["image_id"] == "cats/alpha.png"][0]
    assert ImageReader(manifest, mode="RGB")[row].getpixel((0, 0)) == (255, 255, 255)


def test_imagefolder_with_train_and_test(tmp_path):
    root = tmp_path / "photos"
    save_image(root / "train" / "a" / "1.png", "RGB")
    save_image(root / "train" / "b" / "2.png", "RGB")
    save_image(root / "test" / "a" / "3.png", "RGB")
    manifest = prepare("imagefolder", root, tmp_path)
    assert dict(zip(manifest["image_id"], manifest["split"])) == {"train/a/1.png": "train", "train/b/2.png": "train", "test/a/3.png": "test"}
    assert manifest.loc[manifest["image_id"] == "test/a/3.png", "label"].item() == 0


def test_missing_root_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        prepare("mnist", tmp_path / "nowhere", tmp_path)


def test_missing_mnist_file_names_it(tmp_path, mnist_root):
    (mnist_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        prepare("mnist", mnist_root, tmp_path)


def test_truncated_mnist_file_names_it(tmp_path, mnist_root):
    path = mnist_root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.*truncated"):
        prepare("mnist", mnist_root, tmp_path)
    assert not (tmp_path / "out" / "manifest.parquet").exists()


def test_corrupt_cifar_batch_names_it(tmp_path, cifar_root):
    (cifar_root / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="data_batch_3"):
        prepare("cifar10", cifar_root, tmp_path)


def test_corrupt_image_names_it(tmp_path, caltech_root):
    bad = caltech_root / "caltech101" / "101_ObjectCategories" / "anchor" / "image_0003.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match="anchor/image_0003.jpg"):
        prepare("caltech101", caltech_root, tmp_path)
    assert not (tmp_path / "out" / "manifest.parquet").exists()


def test_image_reader_names_file_that_disappeared(tmp_path, imagefolder_root):
    manifest = prepare("imagefolder", imagefolder_root, tmp_path)
    (imagefolder_root / "dogs" / "rgb.jpg").unlink()
    row = manifest.index[manifest["image_id"] == "dogs/rgb.jpg"][0]
    with pytest.raises(ValueError, match="rgb.jpg"):
        ImageReader(manifest)[row]


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    root = tmp_path / "photos"
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1040).astype(np.uint16)  # 0 .. 65520
    (root / "scans").mkdir(parents=True)
    Image.fromarray(ramp).save(root / "scans" / "ramp16.png")
    save_image(root / "other" / "rgb.png", "RGB")
    manifest = prepare("imagefolder", root, tmp_path)
    row = manifest.index[manifest["image_id"] == "scans/ramp16.png"][0]
    with Image.open(manifest.loc[row, "path"]) as raw:
        assert raw.mode.startswith("I")  # Pillow keeps the 16 bits
    for mode in ("L", "RGB"):
        pixels = np.asarray(ImageReader(manifest, mode)[row], dtype=np.int64)
        gray = pixels if mode == "L" else pixels[..., 0]
        np.testing.assert_allclose(gray, ramp / 257, atol=0.51)  # 65535 -> 255, order kept
        assert len(np.unique(gray)) == 64  # no run of clipped white


def test_truncated_jpeg_is_named_at_the_dataset_stage(tmp_path, caltech_root):
    # Pillow's verify() passes a JPEG cut short; only a full decode notices.
    path = caltech_root / "caltech101" / "101_ObjectCategories" / "airplanes" / "image_0002.jpg"
    save_image(path, "RGB", size=(64, 48), seed=5)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with Image.open(path) as image:
        image.verify()
    with pytest.raises(ValueError, match="airplanes/image_0002.jpg.*truncated"):
        prepare("caltech101", caltech_root, tmp_path)
    assert not (tmp_path / "out" / "manifest.parquet").exists()


def test_file_name_that_is_not_utf8_is_named(tmp_path, imagefolder_root):
    bad = os.path.join(os.fsencode(imagefolder_root / "cats"), b"caf\xe9.png")
    Image.new("RGB", (4, 4)).save(bad.decode("utf-8", "surrogateescape"), format="PNG")
    with pytest.raises(ValueError, match=r"not valid UTF-8.*cats/caf\\xe9\.png"):
        prepare("imagefolder", imagefolder_root, tmp_path)
    assert not (tmp_path / "out" / "manifest.parquet").exists()


@pytest.mark.parametrize("what", ["image", "class folder"])
def test_dangling_symlink_is_named(tmp_path, imagefolder_root, what):
    link = imagefolder_root / "dogs" / "gone.jpg" if what == "image" else imagefolder_root / "birds"
    link.symlink_to(tmp_path / "elsewhere" / "missing")
    with pytest.raises(FileNotFoundError, match=f"broken symbolic link.*{link.relative_to(tmp_path)}"):
        prepare("imagefolder", imagefolder_root, tmp_path)
