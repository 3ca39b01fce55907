"""Query latency of `cbir search`: model forward + search, per image, on this machine.

Needs a finished run of the embedded default (`uv run snakemake --cores all`) in the working
directory. Prints a Markdown table: for the embedded index, and for the same model searching a
synthetic index of 1,000,000 random codes of the same length.

    uv run python benchmarks/bench_query.py [--model hashing/smallcnn/ba/48] [--queries 100]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from cbir.codes import pack_bits
from cbir.config import load_config
from cbir.query import SearchEngine
from cbir.search import make_index


def ms(times: np.ndarray) -> str:
    return f"{1e3 * np.median(times):.2f} / {1e3 * np.percentile(times, 95):.2f}"


def timed(function, repeats: int) -> np.ndarray:
    times = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        function(i)
        times[i] = time.perf_counter() - start
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", default="config.yaml")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--models", nargs="+", default=["hashing/smallcnn/ba/48", "metric/smallcnn/TN-FT"])
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--synthetic", type=int, default=1_000_000, help="codes in the synthetic index")
    parser.add_argument("--threads", type=int, default=1, help="torch and faiss threads (1: the latency of one query)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    config = load_config(args.configfile)
    rng = np.random.default_rng(0)
    print("| index | database | forward ms (median / p95) | search ms (median / p95) | total ms per image (median / p95) |")
    print("| --- | ---: | --- | --- | --- |")
    for model in args.models:
        engine = SearchEngine(config, args.dataset, model)
        images = [engine.reader[i] for i in rng.choice(len(engine.manifest), size=args.queries)]
        engine.embed(images[:1])  # warm-up
        forward = timed(lambda i, engine=engine, images=images: engine.embed([images[i]]), args.queries)
        queries = np.concatenate([engine.embed([image]) for image in images])
        indexes = [("embedded", engine.index)]
        n_bits = engine.database.n_bits
        if n_bits is not None:  # the same codes' length, a million random database codes
            indexes.append(("synthetic", make_index(pack_bits(rng.integers(0, 2, (args.synthetic, n_bits))), n_bits=n_bits)))
        for name, index in indexes:
            index.search(queries[:1], 10)
            search = timed(lambda i, index=index, queries=queries: index.search(queries[i : i + 1], 10), args.queries)
            print(f"| {model} ({name}) | {index.ntotal:,} | {ms(forward)} | {ms(search)} | {ms(forward + search)} |")

if __name__ == "__main__":
    main()
