"""Reading a dataset's images back: decoded in full, in one colour mode, as arrays.

An image is a row of a manifest: a file (any format Pillow decodes), or a row of an array
dataset's memory-mapped ``pixels.npy``. Nothing here writes.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from PIL import Image


#: File name extensions read as images: torchvision's ImageFolder list (copied, so that the
#: dataset stage need not import torchvision, about 1.6 s), and GIF (its first frame).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


def printable_path(path) -> str:
    """A path for messages and logs: bytes that are not UTF-8 shown as ``\\xff`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


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
