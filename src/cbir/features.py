"""The feature stages: fine-tune a backbone on a split's training images, dump its features.

These functions do the file I/O of the ``finetune`` and ``extract_features`` rules, so the
workflow scripts only unpack ``snakemake`` and call them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from cbir.config import input_mode
from cbir.datasets import read_manifest
from cbir.image_cache import open_image_cache
from cbir.io import read_parquet, write_descriptor_dataset, write_descriptors, write_feature_shard, write_parquet
from cbir.models import Backbone, build_backbone
from cbir.training import ImageTensors, save_checkpoint, finetune, fingerprint, resolve_device, run_layers, seed_everything

log = logging.getLogger(__name__)

#: Dataset kinds whose mirror images keep their class (digits do not: a mirrored 2 is no 2).
MIRROR_INVARIANT = {"fashion_mnist", "cifar10", "caltech101", "holidays", "imagefolder", "multilabel"}


def split_images(manifest_path: str | os.PathLike, split_path: str | os.PathLike) -> pd.DataFrame:
    """The split's rows (in split order) with the manifest's pixel locations and ``row``, each
    image's position in the manifest (its row in an image cache)."""
    manifest = read_manifest(manifest_path).assign(row=lambda m: np.arange(len(m)))
    split = read_parquet(split_path)
    images = split.merge(manifest[["image_id", "path", "index", "row"]], on="image_id", how="left", validate="one_to_one")
    if images["path"].isna().any():
        missing = images.loc[images["path"].isna(), "image_id"].head().tolist()
        raise ValueError(f"split {split_path} names images missing from manifest {manifest_path}: {missing}")
    return images


def image_set(images: pd.DataFrame, mode: str, size: int, image_cache=None, manifest_path=None) -> ImageTensors:
    """``images`` (rows of :func:`split_images`) as model input; from ``image_cache`` when given,
    checked to hold every image of ``manifest_path`` in ``mode`` at ``size``."""
    if image_cache is not None:
        open_image_cache(image_cache, pq.ParquetFile(manifest_path).metadata.num_rows, mode, size)
    return ImageTensors(images.reset_index(drop=True), mode, size, image_cache)


def validation_mask(n_train: int, fraction: float, seed: int) -> np.ndarray:
    """Which of a split's ``n_train`` training images (in split order) training holds out for
    validation: a seeded ``fraction`` of them."""
    is_val = np.zeros(n_train, dtype=bool)
    is_val[np.random.default_rng(seed).permutation(n_train)[: int(round(fraction * n_train))]] = True
    return is_val


def training_sets(images: pd.DataFrame, options: dict, seed: int, mode: str, size: int, image_cache=None, manifest_path=None) -> tuple[ImageTensors, ImageTensors | None]:
    """The split's training images, less a seeded ``validation_fraction`` held out for per-epoch
    validation (None when nothing is held out)."""
    train = images[images["train"]].reset_index(drop=True)
    is_val = validation_mask(len(train), options["validation_fraction"], seed)
    val_set = image_set(train[is_val], mode, size, image_cache, manifest_path) if is_val.any() else None
    return image_set(train[~is_val], mode, size, image_cache, manifest_path), val_set


def load_backbone(backbone_cfg: dict, dataset_kind: str, weights: str | None = None) -> tuple[Backbone, str]:
    """The configured backbone with ``weights`` (default: the configured ones) and its input mode."""
    mode = input_mode(backbone_cfg["arch"], dataset_kind)
    backbone = build_backbone(backbone_cfg["arch"], weights or backbone_cfg["weights"], in_channels=len(mode), width=backbone_cfg.get("width"))
    return backbone, mode


def train_backbone(
    manifest_path,
    split_path,
    backbone_cfg: dict,
    dataset_kind: str,
    seed: int,
    model_path,
    history_path,
    weights_path: str | None = None,
    image_cache: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Fine-tune on the split's training images; write the model and the per-epoch history.

    ``image_cache`` is the dataset's image cache for the backbone's input mode and size
    (:func:`cbir.image_cache.build_image_cache`); without one, the images are read from the
    dataset's ``pixels.npy`` or decoded once at the start. A run killed mid-way resumes from
    ``<model_path>.resume`` (kept only while training).
    """
    images = split_images(manifest_path, split_path)
    train = images[images["train"]].reset_index(drop=True)
    class_names = train.sort_values("label").drop_duplicates("label")["class_name"].tolist()
    n_classes = int(images["label"].max()) + 1
    options = backbone_cfg["finetune"]
    seed_everything(seed)
    backbone, mode = load_backbone(backbone_cfg, dataset_kind, weights_path)
    backbone.replace_head(n_classes)

    size = backbone_cfg["input_size"]
    train_set, val_set = training_sets(images, options, seed, mode, size, image_cache, manifest_path)
    resume_path = Path(str(model_path) + ".resume")
    run_id = fingerprint(backbone_cfg, dataset_kind, seed, train["image_id"].tolist(), weights_path)
    history = finetune(backbone, train_set, val_set, options, dataset_kind in MIRROR_INVARIANT, seed, resume_path, run_id)
    save_checkpoint(
        {"arch": backbone.arch, "state_dict": backbone.model.state_dict(), "input_mode": mode, "input_size": size, "class_names": class_names},
        Path(model_path),
    )
    write_parquet(history, history_path)
    resume_path.unlink(missing_ok=True)
    if len(history):
        last = history.iloc[-1]
        log.info("done: train accuracy %.2f%%, validation accuracy %.2f%%", 100 * last["train_accuracy"], 100 * last.get("val_accuracy", float("nan")))
    return history


def extract_features(
    manifest_path,
    split_path,
    backbone_cfg: dict,
    dataset_kind: str,
    layer: str,
    out_path,
    weights_path: str | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    image_cache: str | os.PathLike | None = None,
) -> np.ndarray:
    """Write ``layer``'s activations for every image of the split as a descriptor file.

    ``batch_size`` defaults to 256 images on a CPU and 1,024 on a GPU; ``image_cache`` as for
    :func:`train_backbone`."""
    images = split_images(manifest_path, split_path)
    features = _layer_features(images, manifest_path, backbone_cfg, dataset_kind, layer, weights_path, seed, batch_size, image_cache)
    write_descriptors(out_path, images, features)  # its image_id, label, roles (and labels, for multi-label data)
    log.info("wrote %d x %d features to %s", *features.shape, out_path)
    return features


def shard_bounds(n_images: int, shard_size: int) -> list[tuple[int, int]]:
    """The manifest rows [start, stop) of each shard: consecutive runs of ``shard_size``."""
    return [(start, min(start + shard_size, n_images)) for start in range(0, n_images, shard_size)]


def extract_feature_shard(
    manifest_path,
    rows: tuple[int, int],
    backbone_cfg: dict,
    dataset_kind: str,
    layer: str,
    out_path,
    weights_path: str | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    image_cache: str | os.PathLike | None = None,
) -> np.ndarray:
    """Write ``layer``'s activations for the manifest's rows [start, stop) as a feature shard
    (:func:`cbir.io.write_feature_shard`); images are read from their files unless
    ``image_cache`` is given, so a shard does not depend on the other shards' images."""
    manifest = read_manifest(manifest_path).assign(row=lambda m: np.arange(len(m)))
    start, stop = rows
    if not 0 <= start < stop <= len(manifest):
        raise ValueError(f"shard rows [{start}, {stop}) are outside {manifest_path}'s {len(manifest)} images")
    images = manifest.iloc[start:stop].reset_index(drop=True)
    features = _layer_features(images, manifest_path, backbone_cfg, dataset_kind, layer, weights_path, seed, batch_size, image_cache)
    write_feature_shard(out_path, images["image_id"], images["label"], features)
    log.info("wrote %d x %d features of images %d..%d to %s", *features.shape, start, stop - 1, out_path)
    return features


def gather_features(split_path, shard_paths, out_path) -> None:
    """Gather feature shards into a descriptor dataset for the split's images, in split order;
    reads the split and the shards' image ids, never their features."""
    split = read_parquet(split_path)
    write_descriptor_dataset(out_path, split, shard_paths)
    log.info("gathered %d shards into %s for the %d images of %s", len(shard_paths), out_path, len(split), split_path)


def _layer_features(images: pd.DataFrame, manifest_path, backbone_cfg: dict, dataset_kind: str, layer: str, weights_path, seed: int, batch_size, image_cache) -> np.ndarray:
    seed_everything(seed)  # random-weight backbones are the same for a seed
    backbone, mode = load_backbone(backbone_cfg, dataset_kind, weights_path)
    device = resolve_device(backbone_cfg["finetune"]["device"])
    log.info("extracting %s features of %d images with %s on %s", layer, len(images), backbone.arch, device)
    dataset = image_set(images, mode, backbone_cfg["input_size"], image_cache, manifest_path)
    options = backbone_cfg["finetune"]
    batch_size = batch_size or (1024 if device.type == "cuda" else 256)
    features = run_layers(backbone, dataset, (layer,), batch_size, options["workers"], device, progress=True, resident_gib=options.get("resident_gib"), precision=options.get("precision", "auto"))[layer]
    if not np.isfinite(features).all():
        raise ValueError(f"non-finite {layer} features from {weights_path or backbone_cfg['weights']}")
    return features
