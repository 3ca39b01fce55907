"""Search an indexed collection with new images: what a user does once the pipeline has run.

:class:`SearchEngine` loads, for one dataset and one descriptor of a finished run, everything a
query needs: the backbone (fine-tuned, or pretrained for the siamese/triplet models), the hasher
or FC8 head, the database's codes or descriptors, and the manifest that says where each database
image is. ``engine.search(paths, k)`` then embeds each query exactly as the pipeline embedded the
database images and returns the top ``k``, ranked as the evaluation stage ranks them.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from cbir.config import PIXEL_ARRAY_KINDS
from cbir.methods import deep_hashers, network_hashers
from cbir.datasets import DECODE_ERRORS, ImageReader, load_image, read_manifest, to_mode
from cbir.io import read_descriptors
from cbir.paths import Layout, descriptor_names
from cbir.training import Augment, image_tensor, mixed_precision, seed_everything

log = logging.getLogger(__name__)


class IndexNotFound(FileNotFoundError):
    """A file the search needs is missing: the pipeline has not built this index yet."""


@dataclass
class QueryError:
    path: str
    reason: str


def _need(path: Path) -> Path:
    if not path.is_file():
        raise IndexNotFound(f"missing {path}: run the pipeline for this dataset and model first (snakemake --cores all)")
    return path


def available(config: dict) -> list[tuple[str, str]]:
    """(dataset, descriptor) pairs the config defines, in the names ``--model`` takes."""
    return [(dataset, name) for dataset in config["datasets"] for name in descriptor_names(config, dataset)]


def collection_folders(config: dict, dataset: str) -> list[Path]:
    """The folders a dataset's images may be read from: its own folder under resources/datasets
    (the pixel arrays) and, for image files, its configured root or download folder."""
    cfg = config["datasets"][dataset]
    folders = [Path(Layout.manifest(dataset)).parent]
    if cfg["kind"] not in PIXEL_ARRAY_KINDS:
        folders.append(Path(cfg["root"] if cfg["root"] is not None else Layout.downloads(cfg["kind"])))
    return folders


def _confine(paths: pd.Series, folders: list[Path], manifest_path) -> None:
    """Refuse a manifest that names files outside ``folders``: the index would open them."""
    roots = [os.path.join(os.path.abspath(folder), "") for folder in folders]
    outside = [p for p in pd.unique(paths) if not any(os.path.abspath(p).startswith(root) for root in roots)]
    if outside:
        raise ValueError(
            f"{manifest_path} names {len(outside)} file(s) outside the indexed collection ({', '.join(map(str, folders))}), "
            f"e.g. {outside[0]}; refusing to open them (rebuild it with snakemake)"
        )


class SearchEngine:
    """A built index of one dataset, descriptor and repeat (seed), searchable with image files."""

    def __init__(self, config: dict, dataset: str, descriptor: str, seed: int | None = None):
        from cbir.features import load_backbone
        from cbir.models import input_normalization
        from cbir.search import make_index

        if dataset not in config["datasets"]:
            raise ValueError(f"unknown dataset {dataset!r}; the config defines {', '.join(config['datasets'])}")
        if (dataset, descriptor) not in available(config):
            choices = ", ".join(d for ds, d in available(config) if ds == dataset)
            raise ValueError(f"{descriptor!r} is not a model of dataset {dataset!r}; choose one of: {choices}")
        seed = config["seeds"][0] if seed is None else seed
        if seed not in config["seeds"]:
            raise ValueError(f"seed {seed} is not one of the config's seeds ({', '.join(map(str, config['seeds']))})")
        paths = Layout.of(config)
        kind, backbone_name = descriptor.split("/")[:2]
        finetuned = Path(paths.backbone(dataset, seed, backbone_name))
        backbone_cfg = config["backbones"][backbone_name]
        dataset_kind = config["datasets"][dataset]["kind"]
        self.descriptor, self.seed = descriptor, seed
        # self.layer of the network feeds self.describe, which turns it into the descriptor.
        network = None
        if kind == "hashing":
            method, bits = descriptor.split("/")[2:]
            model_file = lambda name: _need(Path(paths.hashing(dataset, seed, backbone_name, method, bits, name)))  # noqa: E731
            weights, self.layer = str(_need(finetuned)), backbone_cfg["feature_layer"]
            if method in deep_hashers():
                from cbir.deephash.core import codes_of, load_network

                network, self.layer, self.describe = load_network(model_file("model.pt")), "hash", codes_of
            elif method in network_hashers():
                from cbir.deephash.core import codes_of, head_outputs, load_head

                head = load_head(model_file("model.pt"))
                self.describe = lambda features: codes_of(head_outputs(head, features))
            else:
                from cbir.hashing.stage import encode, load_hash_model

                model = load_hash_model(model_file("model.npz"))
                self.describe = lambda features: encode(model, features)
        elif kind == "metric":
            from cbir.metric_learning import descriptors, load_head

            self.layer = "penultimate"
            # the pretrained backbone, as the cached features were made
            weights = backbone_cfg["weights"].replace("{seed}", str(seed))
            if weights not in ("none", "imagenet"):
                weights = str(_need(Path(weights)))
            head = load_head(_need(Path(paths.metric(dataset, seed, backbone_name, descriptor.split("/")[2], "head.pt"))))
            normalize = config["metric_learning"]["normalize"]
            self.describe = lambda features: descriptors(head, features, normalize)
        else:
            weights, self.layer = str(_need(finetuned)), descriptor.split("/")[3]
            self.describe = lambda features: features
        seed_everything(seed)  # a randomly initialised backbone is the one the pipeline used
        self.backbone, self.mode = load_backbone(backbone_cfg, dataset_kind, weights)
        self.backbone = (network or self.backbone).eval()
        self.size, self.precision = backbone_cfg["input_size"], backbone_cfg["finetune"]["precision"]
        self.augment = Augment(*input_normalization(backbone_cfg["arch"], len(self.mode)), flip=False)
        descriptors_of_split = read_descriptors(_need(Path(paths.descriptor(dataset, seed, descriptor))))
        database = descriptors_of_split.subset("database")
        self.database, self.queries = database, descriptors_of_split.subset("query")
        self.index = make_index(database.values, n_bits=database.n_bits)
        manifest_path = _need(Path(paths.manifest(dataset)))
        manifest = read_manifest(manifest_path)
        split_ids = descriptors_of_split.image_id[descriptors_of_split.database | descriptors_of_split.query]
        missing = sorted(set(split_ids) - set(manifest["image_id"]))
        if missing:
            raise ValueError(f"{manifest_path} lacks images of the index: {missing[:5]}")
        # The database's images, then the queries' (rows of self.images): all that is ever shown.
        self.images = manifest.set_index("image_id").loc[np.concatenate([database.image_id, self.queries.image_id])].reset_index()
        _confine(self.images["path"], collection_folders(config, dataset), manifest_path)
        self.manifest = self.images.iloc[: len(database)]
        self.row_of = {image_id: row for row, image_id in enumerate(self.images["image_id"])}
        self.reader = ImageReader(self.images, self.mode)

    @torch.no_grad()
    def embed(self, images: list[Image.Image]) -> np.ndarray:
        """Descriptors (float features, or packed codes) of PIL images."""
        # the same colour mode and resizing as the pipeline's image input
        batch = torch.stack([image_tensor(to_mode(image, self.mode), self.size) for image in images])
        with mixed_precision(torch.device("cpu"), self.precision, training=False):  # as the database was embedded on a CPU
            layer = self.backbone.layers(self.augment(batch), (self.layer,))[self.layer]
        return self.describe(layer.float().numpy())

    def search(self, paths: list[str | Path], k: int = 10) -> tuple[pd.DataFrame, list[QueryError]]:
        """Top ``k`` database images for each readable image file; unreadable files are skipped
        and returned as errors."""
        images, names, errors = [], [], []
        for path in paths:
            try:
                images.append(load_image(path))
                names.append(str(path))
            except DECODE_ERRORS as err:
                errors.append(QueryError(str(path), f"{err.__class__.__name__}: {err}"))
        return self.search_images(images, names, k), errors

    def search_images(self, images: list[Image.Image], names: list[str], k: int = 10) -> pd.DataFrame:
        """Top ``k`` database images for each decoded image, one row per (query, rank)."""
        if not images:
            return pd.DataFrame(columns=["query", "rank", "image_id", "path", "label", "class_name", "distance"])
        return self._ranked(self.embed(images), names, k)

    def search_split_query(self, query_id: str, k: int = 10) -> tuple[pd.DataFrame, dict]:
        """Top ``k`` for one of the split's queries, by the descriptor the pipeline stored for it
        (as the evaluation searched it), each hit marked ``relevant`` (same class; for multi-label
        data, a class in common), and the query's label, class and precision@k."""
        rows = np.flatnonzero(self.queries.image_id == query_id)
        if not len(rows):
            raise ValueError(f"{query_id!r} is not a query of this split")
        table = self._ranked(self.queries.values[rows], [query_id], k)
        label = int(self.queries.label[rows[0]])
        query = self.images.iloc[self.row_of[query_id]]
        if "labels" in self.images:
            classes = set(query["labels"])
            table["relevant"] = [not classes.isdisjoint(self.images["labels"].iat[self.row_of[hit]]) for hit in table["image_id"]]
        else:
            table["relevant"] = table["label"].to_numpy() == label
        return table, {"image_id": query_id, "label": label, "class_name": str(query["class_name"]), "precision": float(table["relevant"].mean())}

    def _ranked(self, descriptors: np.ndarray, names: list[str], k: int) -> pd.DataFrame:
        started = time.perf_counter()
        distances, indices = self.index.search(descriptors, min(k, self.index.ntotal))
        log.info("searched %d queries in %.1f ms", len(names), 1e3 * (time.perf_counter() - started))
        rows = self.manifest.iloc[indices.ravel()]
        table = pd.DataFrame(
            {
                "query": np.repeat(names, indices.shape[1]),
                "rank": np.tile(np.arange(1, indices.shape[1] + 1), len(names)),
                "image_id": rows["image_id"].to_numpy(),
                "path": rows["path"].where(rows["index"] < 0, rows["path"] + "#" + rows["index"].astype(str)).to_numpy(),
                "label": rows["label"].to_numpy(),
                "class_name": rows["class_name"].to_numpy(),
                "distance": distances.ravel(),
            }
        )
        return table

    def thumbnail(self, image_id: str, size: int = 96) -> Image.Image:
        """A database or query image of this index, converted to RGB and shrunk to fit ``size``
        (an image id outside the index is an error: nothing else is ever read)."""
        if image_id not in self.row_of:
            raise KeyError(f"{image_id!r} is not an image of this index")
        image = self.reader[self.row_of[image_id]].convert("RGB")
        scale = size / max(image.size)
        return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.BILINEAR)

    def contact_sheet(self, results: pd.DataFrame, path) -> None:
        """A PNG: each query followed by its results."""
        from cbir.report import contact_sheet

        rows = []
        for query, hits in results.groupby("query", sort=False):
            rows.append(
                (
                    to_mode(load_image(query), self.mode),
                    Path(query).name,
                    [(self.reader[self.row_of[h.image_id]], f"{h.class_name} · {h.distance:g}", None) for h in hits.itertuples()],
                )
            )
        contact_sheet(rows, path, self.mode, f"{self.descriptor}: query (left) and its nearest database images")
