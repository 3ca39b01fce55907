"""`cbir serve` (through its ASGI app) and the retrieval explorer, on the default run."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cbir.config import load_config

from conftest import REPO

starlette_testclient = pytest.importorskip("starlette.testclient")

MODEL = "hashing/smallcnn/ba/48"


@pytest.fixture
def client(default_run, monkeypatch):
    from cbir.web.server import create_app

    monkeypatch.chdir(default_run)
    return starlette_testclient.TestClient(create_app(load_config(REPO / "config.yaml"), max_upload_bytes=64 * 1024))


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def database_image(run, k: int = 0) -> tuple[str, bytes]:
    split = pd.read_parquet(run / "results/digits/seed0/splits/digits.parquet")
    image_id = split.loc[split["database"], "image_id"].iloc[k]
    manifest = pd.read_parquet(run / "resources/datasets/digits/manifest.parquet").set_index("image_id")
    pixels = np.load(run / "resources/datasets/digits/pixels.npy")[manifest.loc[image_id, "index"]][..., 0]
    return image_id, png(pixels)


def test_the_page_and_the_list_of_indexes(client):
    page = client.get("/")
    assert page.status_code == 200 and "cbir — search the indexed collection" in page.text
    listing = client.get("/api/indexes").json()
    built = {(x["dataset"], x["model"]): x["seeds"] for x in listing["indexes"]}
    assert built[("digits", MODEL)] == [0, 1] and built[("digits", "metric/smallcnn/TN-FT")] == [0, 1]


def test_an_uploaded_database_image_finds_itself_first(client, default_run):
    image_id, data = database_image(default_run)
    reply = client.post("/api/search", data={"dataset": "digits", "model": "features/smallcnn/finetuned/penultimate", "seed": "0", "k": "5"}, files={"image": ("mine.png", data, "image/png")})
    assert reply.status_code == 200, reply.text
    hits = reply.json()["hits"]
    assert len(hits) == 5 and hits[0]["image_id"] == image_id and hits[0]["distance"] == pytest.approx(0, abs=1e-4)
    assert reply.json()["query"] == {"name": "mine.png"}


def test_a_query_of_the_split_with_hits_marked_and_its_precision(client, default_run):
    queries = client.get("/api/queries", params={"dataset": "digits", "model": MODEL, "seed": 1}).json()["queries"]
    split = pd.read_parquet(default_run / "results/digits/seed1/splits/digits.parquet")
    assert [q["image_id"] for q in queries] == split.loc[split["query"], "image_id"].tolist()
    query = queries[3]
    reply = client.get("/api/search-query", params={"dataset": "digits", "model": MODEL, "seed": 1, "k": 10, "query_id": query["image_id"]}).json()
    assert [hit["relevant"] for hit in reply["hits"]] == [hit["label"] == query["label"] for hit in reply["hits"]]
    assert reply["query"]["precision"] == pytest.approx(np.mean([hit["relevant"] for hit in reply["hits"]]))
    # the same ranking as the evaluation stage's
    ranking = pd.read_parquet(default_run / f"results/digits/seed1/evaluation/{MODEL}/ranking.parquet")
    assert [hit["image_id"] for hit in reply["hits"]] == ranking.loc[ranking["query_id"] == query["image_id"], "image_id"].head(10).tolist()


@pytest.mark.parametrize(
    "data, status, message",
    [
        (b"not an image at all", 400, "is not an image cbir can read"),
        (png(np.zeros((8, 8), np.uint8))[:30], 400, "is not an image cbir can read"),
        (b"\x89PNG" + b"\x00" * (70 * 1024), 413, "larger than"),
    ],
    ids=["text", "truncated PNG", "too large"],
)
def test_a_bad_upload_is_refused_with_a_reason(client, data, status, message):
    reply = client.post("/api/search", data={"dataset": "digits", "model": MODEL, "seed": "0"}, files={"image": ("x.png", data, "image/png")})
    assert reply.status_code == status and message in reply.json()["error"]


@pytest.mark.parametrize(
    "params, status, message",
    [
        ({"dataset": "digits", "model": MODEL, "seed": 0, "image_id": "../../../etc/passwd"}, 404, "is not an image of this index"),
        ({"dataset": "digits", "model": MODEL, "seed": 0, "image_id": "/etc/passwd"}, 404, "is not an image of this index"),
        ({"dataset": "nope", "model": MODEL, "seed": 0, "image_id": "train/00000"}, 400, "unknown dataset"),
        ({"dataset": "digits", "model": MODEL, "seed": 9, "image_id": "train/00000"}, 400, "seed 9"),
        ({"dataset": "digits", "model": "hashing/smallcnn/kmeans/48", "seed": 0, "image_id": "train/00000"}, 400, "is not a model"),
    ],
    ids=["relative path", "absolute path", "unknown dataset", "unknown seed", "unknown model"],
)
def test_thumbnails_come_from_the_index_only(client, params, status, message):
    reply = client.get("/api/thumbnail", params=params)
    assert reply.status_code == status and message in reply.json()["error"]


def test_a_thumbnail_of_an_indexed_image(client, default_run):
    image_id, _ = database_image(default_run, 7)
    reply = client.get("/api/thumbnail", params={"dataset": "digits", "model": MODEL, "seed": 0, "image_id": image_id})
    assert reply.status_code == 200 and reply.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(reply.content)).size == (96, 96)


def test_the_server_listens_on_this_machine_only_by_default():
    import inspect

    from cbir.web.server import serve

    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"


def explorer_data(html: str) -> dict:
    return json.loads(re.search(r"const DATA = (.*?);\n", html).group(1))


def test_the_explorer_holds_every_descriptor_and_both_ground_truths(default_run):
    page = default_run / "results/report/default/explorer_digits.html"
    data = explorer_data(page.read_text())
    assert len(data["queries"]) == 60 and len(data["descriptors"]) == 4 * 4 + 1 + 8
    per_query = pd.read_parquet(default_run / f"results/digits/seed0/evaluation/{MODEL}/per_query.parquet").set_index(["query_id", "ground_truth"])
    query = data["queries"][0]
    entry = data["results"][MODEL][query]
    assert entry["ap"]["labels"] == pytest.approx(100 * per_query.loc[(query, "labels"), "map"], abs=0.01)
    assert entry["ap"]["neighbours"] == pytest.approx(100 * per_query.loc[(query, "neighbours"), "map"], abs=0.01)
    assert len(entry["hits"]) == 10 and all(image_id in data["images"] for image_id, _ in entry["hits"])
    assert all(uri.startswith("data:image/png;base64,") for uri in data["images"].values())
