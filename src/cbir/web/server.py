"""``cbir serve``: a local search page over what the pipeline built for one configuration.

Pick a dataset, a seed and a model (hash codes or float descriptors), then search with an
uploaded or dropped image, or with a query of the split: the page shows the top k as thumbnails
with their distance and class, and for a split query which hits share its class and its
precision@k. A Starlette application served by uvicorn:

* bound to 127.0.0.1 unless told otherwise, no debug mode, no reload;
* uploads are read up to ``max_upload_bytes`` and decoded by the dataset stage's decoder (a full
  decode, Pillow's decompression-bomb guard on): a file that is too large or not an image gets a
  400/413 answer naming why, never a traceback;
* thumbnails are served by image id from the index's own images (its database and queries, whose
  paths were checked to lie inside the dataset's folders): no file name ever reaches the disk.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import OrderedDict
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_BYTES = 10 * 2**20
MAX_K = 100
ENGINES_KEPT = 4  # indexes held in memory at once (each holds a network and its database)


class BadRequest(ValueError):
    """A request the page cannot answer: its message is the reply."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Indexes:
    """The config's built indexes, each loaded on first use (:class:`cbir.query.SearchEngine`),
    the last few kept."""

    def __init__(self, config: dict):
        self.config = config
        self._engines: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()

    def listing(self) -> list[dict]:
        """Every (dataset, model) the config defines, with the seeds whose index is built."""
        from cbir.paths import Layout
        from cbir.query import available

        paths = Layout.of(self.config)
        listing = []
        for dataset, descriptor in available(self.config):
            built = [seed for seed in self.config["seeds"] if Path(paths.descriptor(dataset, seed, descriptor)).exists()]
            listing.append({"dataset": dataset, "model": descriptor, "seeds": built})
        return listing

    def engine(self, dataset: str, model: str, seed: int):
        from cbir.query import IndexNotFound, SearchEngine

        key = (dataset, model, seed)
        with self._lock:
            if key in self._engines:
                self._engines.move_to_end(key)
                return self._engines[key]
            try:
                engine = SearchEngine(self.config, dataset, model, seed=seed)
            except IndexNotFound as err:
                raise BadRequest(str(err), 404) from None
            except (ValueError, KeyError) as err:
                raise BadRequest(str(err)) from None
            self._engines[key] = engine
            while len(self._engines) > ENGINES_KEPT:
                self._engines.popitem(last=False)
            return engine


def _choice(params, config: dict) -> tuple[str, str, int, int]:
    """(dataset, model, seed, k) of a request, checked."""
    dataset, model = params.get("dataset"), params.get("model")
    if not dataset or not model:
        raise BadRequest("give a dataset and a model")
    try:
        seed = int(params.get("seed", config["seeds"][0]))
        k = int(params.get("k", 10))
    except (TypeError, ValueError):
        raise BadRequest("seed and k must be integers") from None
    if not 1 <= k <= MAX_K:
        raise BadRequest(f"k must be between 1 and {MAX_K}")
    return dataset, model, seed, k


def _hits(table) -> list[dict]:
    return [
        {"rank": int(row.rank), "image_id": str(row.image_id), "label": int(row.label), "class_name": str(row.class_name), "distance": float(row.distance), **({"relevant": bool(row.relevant)} if hasattr(row, "relevant") else {})}
        for row in table.itertuples()
    ]


async def _read_upload(request: Request, limit: int):
    """The uploaded image of a multipart form, decoded as the dataset stage decodes files."""
    from PIL import Image

    from cbir.datasets import DECODE_ERRORS

    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise BadRequest(f"the upload is larger than {limit // 2**20} MiB", 413)
    form = await request.form(max_files=1, max_fields=8)
    upload = form.get("image")
    if upload is None or not hasattr(upload, "read"):
        raise BadRequest("no image in the form (field 'image')")
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise BadRequest(f"the upload is larger than {limit // 2**20} MiB", 413)
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            image = opened.copy()
    except DECODE_ERRORS as err:
        raise BadRequest(f"{upload.filename or 'the upload'} is not an image cbir can read ({err.__class__.__name__}: {err})") from None
    return form, image, upload.filename or "upload"


def create_app(config: dict, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES) -> Starlette:
    """The search page's application for ``config`` (run in the workflow's directory)."""
    indexes = Indexes(config)
    page = resources.files("cbir.web").joinpath("search.html").read_text(encoding="utf-8")

    def answer(handler):
        async def endpoint(request: Request):
            try:
                return await handler(request)
            except BadRequest as err:
                return JSONResponse({"error": str(err)}, status_code=err.status)

        return endpoint

    async def home(request: Request):
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    async def listing(request: Request):
        return JSONResponse({"indexes": indexes.listing(), "seeds": config["seeds"], "max_upload_bytes": max_upload_bytes})

    async def queries(request: Request):
        dataset, model, seed, _ = _choice(request.query_params, config)
        engine = await run_in_threadpool(indexes.engine, dataset, model, seed)
        return JSONResponse({"queries": [{"image_id": str(i), "label": int(label)} for i, label in zip(engine.queries.image_id, engine.queries.label)]})

    async def search_upload(request: Request):
        form, image, name = await _read_upload(request, max_upload_bytes)
        dataset, model, seed, k = _choice(form, config)
        engine = await run_in_threadpool(indexes.engine, dataset, model, seed)
        table = await run_in_threadpool(engine.search_images, [image], [name], k)
        return JSONResponse({"query": {"name": name}, "hits": _hits(table)})

    async def search_query(request: Request):
        dataset, model, seed, k = _choice(request.query_params, config)
        query_id = request.query_params.get("query_id")
        if not query_id:
            raise BadRequest("give a query_id of the split")
        engine = await run_in_threadpool(indexes.engine, dataset, model, seed)
        try:
            table, query = engine.search_split_query(query_id, k)
        except ValueError as err:
            raise BadRequest(str(err), 404) from None
        return JSONResponse({"query": query, "hits": _hits(table)})

    async def thumbnail(request: Request):
        dataset, model, seed, _ = _choice(request.query_params, config)
        image_id = request.query_params.get("image_id", "")
        engine = await run_in_threadpool(indexes.engine, dataset, model, seed)
        try:
            image = engine.thumbnail(image_id, size=96)
        except KeyError:
            raise BadRequest(f"{image_id!r} is not an image of this index", 404) from None
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return Response(buffer.getvalue(), media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    routes = [
        Route("/", home),
        Route("/api/indexes", answer(listing)),
        Route("/api/queries", answer(queries)),
        Route("/api/search", answer(search_upload), methods=["POST"]),
        Route("/api/search-query", answer(search_query)),
        Route("/api/thumbnail", answer(thumbnail)),
    ]
    return Starlette(debug=False, routes=routes)


def serve(config: dict, host: str = "127.0.0.1", port: int = 8000, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES) -> None:
    """Serve the search page with uvicorn until interrupted."""
    import uvicorn

    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: every machine that reaches it can search this collection and see its images", host)
    print(f"cbir: serving the search page on http://{host}:{port}/ (Ctrl-C stops it)", flush=True)
    uvicorn.run(create_app(config, max_upload_bytes), host=host, port=port, log_level="warning", access_log=False)
