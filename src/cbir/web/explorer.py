"""The retrieval explorer: one static HTML page per dataset (no server), written by the report
stage and embedded in Snakemake's HTML report.

It holds, for one repeat (seed) and a sample of its queries, every descriptor's top results
(from the evaluation's rankings) and every query's AP@k under both ground truths (from the
per-query metrics), with the images as inline thumbnails. In the page: choose two methods or
code lengths, see per query their APs side by side, sort the queries by how much the two differ,
and open a query to see both top-k lists with hits (same class) and misses marked.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from importlib import resources

import numpy as np
import pandas as pd
from PIL import Image

from cbir.datasets import ImageReader, read_manifest
from cbir.io import read_parquet, write_text

log = logging.getLogger(__name__)

#: Queries shown per dataset: a seeded sample, so that the page stays a few MB.
DEFAULT_QUERIES = 60
DEFAULT_TOP = 10
THUMBNAIL_PX = 48


def _data_uri(image: Image.Image, size: int) -> str:
    """A small inline image: PNG for grayscale and tiny images (lossless, small), JPEG for photos."""
    if max(image.size) > size:
        scale = size / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    if image.mode == "L" or max(image.size) <= 32:
        image.save(buffer, format="PNG", optimize=True)
        kind = "png"
    else:
        image.convert("RGB").save(buffer, format="JPEG", quality=80)
        kind = "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def explorer_data(descriptors: dict[str, dict], manifest: pd.DataFrame, mode: str, n_queries: int = DEFAULT_QUERIES, top: int = DEFAULT_TOP, seed: int = 0) -> dict:
    """The page's data: ``descriptors`` maps a descriptor name to its evaluation files
    (``ranking``, ``per_query``); the queries are a seeded sample common to all of them."""
    rankings = {name: read_parquet(files["ranking"], columns=["query_id", "rank", "image_id", "relevant"]) for name, files in descriptors.items()}
    per_query = {name: read_parquet(files["per_query"], columns=["query_id", "ground_truth", "map"]) for name, files in descriptors.items()}
    common = sorted(set.intersection(*(set(r["query_id"].unique()) for r in rankings.values()))) if rankings else []
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(common, size=min(n_queries, len(common)), replace=False).tolist()) if common else []
    results, shown = {}, set(chosen)
    for name, ranking in rankings.items():
        ranking = ranking[ranking["query_id"].isin(chosen) & (ranking["rank"] <= top)].sort_values(["query_id", "rank"])
        ap = per_query[name][per_query[name]["query_id"].isin(chosen)].pivot_table(index="query_id", columns="ground_truth", values="map")
        entry = {}
        for query_id, hits in ranking.groupby("query_id", sort=False):
            entry[query_id] = {"hits": [[str(i), bool(r)] for i, r in zip(hits["image_id"], hits["relevant"])], "ap": {gt: round(100 * float(v), 2) for gt, v in ap.loc[query_id].items() if pd.notna(v)}}
            shown.update(hits["image_id"])
        results[name] = entry
    rows = manifest.set_index("image_id").loc[sorted(shown)].reset_index()
    reader = ImageReader(rows, mode)
    images = {str(image_id): _data_uri(reader[i], THUMBNAIL_PX) for i, image_id in enumerate(rows["image_id"])}
    classes = {str(image_id): str(name) for image_id, name in zip(rows["image_id"], rows["class_name"])}
    return {"descriptors": list(descriptors), "queries": chosen, "results": results, "images": images, "classes": classes, "top": top}


def write_explorer(title: str, descriptors: dict[str, dict], manifest_path, mode: str, out_path, n_queries: int = DEFAULT_QUERIES, top: int = DEFAULT_TOP, seed: int = 0) -> None:
    """Write the explorer page for one dataset and repeat (see the module docstring)."""
    data = explorer_data(descriptors, read_manifest(manifest_path), mode, n_queries, top, seed)
    data["title"] = title
    template = resources.files("cbir.web").joinpath("explorer.html").read_text(encoding="utf-8")
    # JSON inside <script>: "</" could end the element early, so it is escaped.
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    write_text(template.replace("/*DATA*/null", payload), out_path)
    log.info("wrote %s: %d queries, %d descriptors, %d thumbnails", out_path, len(data["queries"]), len(descriptors), len(data["images"]))
