"""Where every file of a run goes: the one module that knows the layout.

The workflow's rules, the ``cbir`` command line and the report all take their paths from here.
Every function returns a plain string; called with ``"{dataset}"``-style placeholders it returns
the pattern a Snakemake rule matches.

``resources/datasets/<dataset>/``            manifest, pixels and decoded-image caches (shared by configurations)
``<results>/<dataset>/seed<seed>/``          one repeat: its split and everything trained on it
    ``splits/<protocol>.parquet``
    ``backbones/<backbone>/model.pt``
    ``features/<backbone>/<stage>/<layer>.parquet``
    ``hashing/<backbone>/<method>/<bits>/``  hash model, codes, training trace
    ``metric/<backbone>/<model>/``           FC8 of a siamese/triplet-paper model, descriptors
    ``evaluation/<descriptor>/``             ranking, search times, metrics
``<results>/logs/`` and ``<results>/logs/benchmarks/``   one log and one benchmark per job
``<results>/.lock``                           held by the run that is writing there
``<report>/``                                 this configuration's tables, figures, provenance

A *descriptor* is named by its place under a repeat's folder: ``hashing/<backbone>/<method>/<bits>``
(hash codes of the fine-tuned backbone's features), ``metric/<backbone>/<model>`` (FC8 descriptors)
or ``features/<backbone>/<stage>/<layer>`` (the features themselves, searched by Euclidean distance).
"""

from __future__ import annotations

#: The descriptor names a rule's wildcard may take: features (evaluated alone) ...
FEATURES_PATTERN = r"features/[^/]+/(finetuned|pretrained)/[^/]+"
#: ... and every descriptor, also hash codes (evaluated a method at a time) and the
#: siamese/triplet models' FC8 (evaluated together).
DESCRIPTOR_PATTERN = FEATURES_PATTERN + r"|hashing/[^/]+/[^/]+/\d+|metric/[^/]+/[^/]+"


def descriptor_names(config: dict, dataset: str) -> list[str]:
    """Every descriptor the config asks for on ``dataset``."""
    cfg = config["datasets"][dataset]
    names = []
    for backbone in cfg["hashing"]:
        names.append(f"features/{backbone}/finetuned/{config['backbones'][backbone]['feature_layer']}")
        names += [f"hashing/{backbone}/{m}/{b}" for m in config["hashing"]["methods"] for b in config["hashing"]["bits"]]
    for backbone in cfg["metric_learning"]:
        names += [f"metric/{backbone}/{model}" for model in config["metric_learning"]["models"]]
    return names


def parse_descriptor(descriptor: str) -> dict:
    """A descriptor name's fields: pipeline, backbone, method (hasher, model or ``euclidean``), bits."""
    parts = descriptor.split("/")
    if parts[0] == "hashing" and len(parts) == 4:
        return {"pipeline": "hashing", "backbone": parts[1], "method": parts[2], "bits": int(parts[3])}
    if parts[0] == "metric" and len(parts) == 3:
        return {"pipeline": "metric", "backbone": parts[1], "method": parts[2], "bits": None}
    if parts[0] == "features" and len(parts) == 4:
        return {"pipeline": "features", "backbone": parts[1], "method": "euclidean", "bits": None}
    raise ValueError(f"not a descriptor name: {descriptor!r}")


class Layout:
    """The paths of one configuration (its ``results_dir`` and ``report_dir``)."""

    def __init__(self, results_dir: str, report_dir: str):
        self.results = str(results_dir).rstrip("/")
        self.report_dir = str(report_dir).rstrip("/")

    @classmethod
    def of(cls, config: dict) -> "Layout":
        return cls(config["results_dir"], config["report_dir"])

    # Datasets, shared by every configuration that names them alike.
    @staticmethod
    def manifest(dataset) -> str:
        return f"resources/datasets/{dataset}/manifest.parquet"

    @staticmethod
    def pixels(dataset) -> str:
        return f"resources/datasets/{dataset}/pixels.npy"

    @staticmethod
    def downloads(kind) -> str:
        """Where a dataset of ``kind`` is downloaded to (when its config has no ``root``)."""
        return f"resources/downloads/{kind}"

    @staticmethod
    def image_cache(dataset, mode, size) -> str:
        """The dataset's images decoded once, in colour ``mode`` at ``size`` (cbir.image_cache)."""
        return f"resources/datasets/{dataset}/cache/{mode}{size}.npy"

    # One repeat (dataset, seed).
    def run(self, dataset, seed) -> str:
        return f"{self.results}/{dataset}/seed{seed}"

    def split(self, dataset, seed, protocol) -> str:
        return f"{self.run(dataset, seed)}/splits/{protocol}.parquet"

    def split_counts(self, dataset, seed, protocol) -> str:
        return f"{self.run(dataset, seed)}/splits/{protocol}_counts.tsv"

    def backbone(self, dataset, seed, backbone, name="model.pt") -> str:
        """The backbone fine-tuned on ``dataset`` (``name``: ``model.pt`` or ``history.parquet``)."""
        return f"{self.run(dataset, seed)}/backbones/{backbone}/{name}"

    def features(self, dataset, seed, backbone, stage, layer) -> str:
        """A descriptor file, or with sharded extraction a Parquet dataset (a folder) of that name."""
        return f"{self.run(dataset, seed)}/features/{backbone}/{stage}/{layer}.parquet"

    def feature_shard(self, dataset, seed, backbone, stage, layer, shard) -> str:
        """Features of one shard of the dataset's images (``shard``: its number, or a wildcard)."""
        shard = f"{shard:05d}" if isinstance(shard, int) else shard
        return f"{self.run(dataset, seed)}/features/{backbone}/{stage}/{layer}.shards/{shard}.parquet"

    def hashing(self, dataset, seed, backbone, method, bits, name) -> str:
        return f"{self.run(dataset, seed)}/hashing/{backbone}/{method}/{bits}/{name}"

    def metric(self, dataset, seed, backbone, model, name) -> str:
        return f"{self.run(dataset, seed)}/metric/{backbone}/{model}/{name}"

    def descriptor(self, dataset, seed, descriptor) -> str:
        """The descriptor file of ``descriptor``."""
        if str(descriptor).startswith("features/"):
            return f"{self.run(dataset, seed)}/{descriptor}.parquet"
        return f"{self.run(dataset, seed)}/{descriptor}/descriptors.parquet"

    def evaluation(self, dataset, seed, descriptor, name) -> str:
        """``name``: ranking, timing, per_query, summary or pr (``.parquet``)."""
        return f"{self.run(dataset, seed)}/evaluation/{descriptor}/{name}.parquet"

    def run_lock(self) -> str:
        """The lock a running workflow holds on its results (cbir.runlock)."""
        return f"{self.results}/.lock"

    # Logs and benchmarks of the jobs, under the results they belong to.
    def log(self, *parts) -> str:
        return f"{self.results}/logs/{'/'.join(map(str, parts))}.log"

    def benchmark(self, *parts) -> str:
        return f"{self.results}/logs/benchmarks/{'/'.join(map(str, parts))}.tsv"

    # This configuration's report.
    def report(self, name) -> str:
        return f"{self.report_dir}/{name}"
