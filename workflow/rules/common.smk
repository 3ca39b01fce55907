"""Config lookups and target lists shared by every stage; paths come from cbir.paths."""

import functools
import hashlib
import os
import re

from cbir.config import GRAYSCALE_KINDS, METRIC_MODELS, PIXEL_ARRAY_KINDS, input_mode, pixels_are_cache
from cbir.methods import DEEP_TRAINING_KEYS, deep_hashers, deep_method, feature_hashers, hasher_spec, network_hashers
from cbir.paths import DESCRIPTOR_PATTERN, FEATURES_PATTERN, Layout, descriptor_names

paths = Layout.of(config)
SEEDS = config["seeds"]
ENV = "../../envs/cbir.yaml"


wildcard_constraints:
    seed=r"\d+",
    descriptor=DESCRIPTOR_PATTERN,


def dataset_cfg(name):
    return config["datasets"][name]


def dataset_pattern(names):
    """A wildcard constraint matching exactly ``names`` (never matching when there are none)."""
    return "|".join(map(re.escape, names)) or "(?!x)x"


#: Datasets whose features are extracted in shards (gathered into a Parquet dataset) or whole.
SHARDED = [name for name, cfg in config["datasets"].items() if cfg["shard_size"]]
UNSHARDED = [name for name in config["datasets"] if name not in SHARDED]


def protocol_of(dataset):
    return dataset_cfg(dataset)["protocol"]


def split_file(wc):
    return paths.split(wc.dataset, wc.seed, protocol_of(wc.dataset))


def backbone_cfg(name):
    return config["backbones"][name]


def weights_of(backbone, seed):
    """The backbone's configured weights, with ``{seed}`` replaced by the repeat's seed."""
    return backbone_cfg(backbone)["weights"].replace("{seed}", str(seed))


def weights_file(backbone, seed):
    """The backbone's weights file as an input (so that replacing it reruns), or nothing."""
    weights = weights_of(backbone, seed)
    return [] if weights in ("none", "imagenet") else [weights]


def training_params(wc):
    """What fine-tuning depends on: everything of the backbone but the layer that is hashed."""
    cfg = {k: v for k, v in backbone_cfg(wc.backbone).items() if k not in ("feature_layer", "threads")}
    return {**cfg, "weights": weights_of(wc.backbone, wc.seed)}


def backbone_threads(wc):
    """CPU threads of a backbone's jobs: a resource, so changing it reruns nothing."""
    return backbone_cfg(wc.backbone)["threads"]


def extraction_params(wc):
    """What feature extraction (and the pretrained FC8) depends on: not the training recipe."""
    cfg = backbone_cfg(wc.backbone)
    return {
        "arch": cfg["arch"],
        "weights": weights_of(wc.backbone, wc.seed),
        "input_size": cfg["input_size"],
        # Inference runs in bf16 on a GPU unless fp32 is asked for, never on a CPU: a bf16 training
        # recipe extracts as auto does (cbir.training.mixed_precision).
        "finetune": {k: cfg["finetune"][k] for k in ("device", "workers")}
        | {"precision": "fp32" if cfg["finetune"]["precision"] == "fp32" else "auto"},
    }


def wait_for_manifest(dataset):
    """Wait for the dataset's checkpoint job: its shards are planned from the manifest it writes."""
    getattr(checkpoints, f"dataset_{dataset}").get()


def shard_bounds_of(dataset):
    """The dataset's shards. The manifest is read directly: the gather's input function has
    waited for the checkpoint (a shard job's params may not, on a cluster node)."""
    from cbir.features import shard_bounds
    import pyarrow.parquet as pq

    n_images = pq.ParquetFile(paths.manifest(dataset)).metadata.num_rows
    return shard_bounds(n_images, dataset_cfg(dataset)["shard_size"])


def feature_shards(wc):
    wait_for_manifest(wc.dataset)
    return [
        paths.feature_shard(wc.dataset, wc.seed, wc.backbone, wc.stage, wc.layer, shard)
        for shard in range(len(shard_bounds_of(wc.dataset)))
    ]


def shard_rows(wc):
    return shard_bounds_of(wc.dataset)[int(wc.shard)]


def shard_images(wc):
    """A digest of the shard's images: ids, labels and, for image files, size and modification
    time. A param instead of the manifest as an input, so that images added to the dataset rerun
    only the shards whose images changed (the manifest itself is rewritten on every change)."""
    start, stop = shard_rows(wc)
    digest = hashlib.sha256()
    path = paths.manifest(wc.dataset)
    for row in manifest_table(path, os.stat(path).st_mtime_ns).iloc[start:stop].itertuples():
        stat = "" if dataset_cfg(wc.dataset)["kind"] in PIXEL_ARRAY_KINDS else os.stat(row.path)
        digest.update(f"{row.image_id}\0{row.label}\0{getattr(stat, 'st_size', '')}\0{getattr(stat, 'st_mtime_ns', '')}\n".encode())
    return digest.hexdigest()


@functools.lru_cache(maxsize=4)
def manifest_table(path, mtime_ns):
    """A manifest, read once per version for all of its shards' params."""
    from cbir.datasets import read_manifest

    return read_manifest(path)


def shard_inputs(wc):
    """What a shard reads besides its own image files: for array datasets, their pixel array and,
    at another size, its image cache; image folders' shards decode their files themselves."""
    if dataset_cfg(wc.dataset)["kind"] not in PIXEL_ARRAY_KINDS:
        return {"pixels": [], "cache": []}
    return {"pixels": [paths.pixels(wc.dataset)], "cache": image_cache(wc)}


def gpus(wc):
    """GPUs a job of this backbone asks the scheduler for: only when the config says cuda."""
    return 1 if backbone_cfg(wc.backbone)["finetune"]["device"] == "cuda" else 0


def image_cache(wc):
    """The decoded-image cache a backbone reads the dataset from; none when the dataset's own
    pixels already are its input (array datasets at their native size)."""
    cfg, kind = backbone_cfg(wc.backbone), dataset_cfg(wc.dataset)["kind"]
    mode, size = input_mode(cfg["arch"], kind), cfg["input_size"]
    return [] if pixels_are_cache(kind, mode, size) else [paths.image_cache(wc.dataset, mode, size)]


# The hashers fitted on features by train_hash: the built-in ones, the plug-ins and the config's variants.
FEATURE_HASHER_NAMES = [*feature_hashers(), *config["hashing"]["variants"]]


def train_sample(wc):
    """How many training rows the method's hasher is fitted on (None: all of them)."""
    sample = config["hashing"]["train_sample"]
    return sample.get(wc.method) if isinstance(sample, dict) else sample


def hashed_layer(backbone):
    return backbone_cfg(backbone)["feature_layer"]


def hashing_features(wc):
    return paths.features(wc.dataset, wc.seed, wc.backbone, "finetuned", hashed_layer(wc.backbone))


def evaluations(pipeline=None):
    """Every (dataset, seed, descriptor) the config evaluates, optionally of one pipeline."""
    return [
        {"dataset": dataset, "seed": seed, "kind": dataset_cfg(dataset)["kind"], "descriptor": descriptor}
        for dataset in config["datasets"]
        for seed in SEEDS
        for descriptor in descriptor_names(config, dataset)
        if pipeline is None or descriptor.startswith(f"{pipeline}/")
    ]


def evaluation_files(name, pipeline=None):
    return [paths.evaluation(e["dataset"], e["seed"], e["descriptor"], name) for e in evaluations(pipeline)]


#: The deep hashing methods this config trains end to end, each every code length on one trunk in
#: one job (`joint`) or one job per length, and those trained as a hash layer on cached features.
DEEP_METHODS = [m for m in config["hashing"]["methods"] if m in deep_hashers()]
JOINT_DEEP = [m for m in DEEP_METHODS if config["hashing"][m]["joint"]]
PER_LENGTH_DEEP = [m for m in DEEP_METHODS if not config["hashing"][m]["joint"]]
HEAD_DEEP = [m for m in config["hashing"]["methods"] if m in network_hashers() and m not in deep_hashers()]


def one_of(names):
    """A wildcard constraint matching exactly ``names`` (nothing when there are none)."""
    return "|".join(map(re.escape, names)) or "(?!)"


def hash_outputs(name, bits):
    """The file ``name`` of each code length in ``bits`` that a hashing job writes."""
    return [paths.hashing("{dataset}", "{seed}", "{backbone}", "{method}", b, name) for b in bits]


def deep_bits(wc):
    """The code lengths a deep hashing job trains: its own (one job per length), or every one."""
    return [int(wc.bits)] if hasattr(wc, "bits") else config["hashing"]["bits"]


def deep_section(wc, keys):
    """The ``keys`` of a deep hashing method's section (the rest do not change this job's output)."""
    section = config["hashing"][deep_method(wc.method)]
    return {k: v for k, v in section.items() if k in keys or k not in DEEP_TRAINING_KEYS}


def deep_weights(wc):
    """Where an end-to-end training starts: the backbone fine-tuned on the dataset (`start:
    finetuned`) or the backbone's configured weights."""
    if config["hashing"][wc.method]["start"] == "finetuned":
        return [paths.backbone(wc.dataset, wc.seed, wc.backbone, "model.pt")]
    return weights_file(wc.backbone, wc.seed)


def hashing_runs():
    """Each fine-tuned (dataset, seed, backbone)."""
    return [{"dataset": d, "seed": s, "backbone": b} for d, cfg in config["datasets"].items() for s in SEEDS for b in cfg["hashing"]]


def ba_traces():
    """The binary autoencoder's training traces, when BA is among the hashing methods."""
    if "ba" not in config["hashing"]["methods"]:
        return []
    return [
        {**run, "bits": bits, "trace": paths.hashing(run["dataset"], run["seed"], run["backbone"], "ba", bits, "trace.tsv")}
        for run in hashing_runs()
        for bits in config["hashing"]["bits"]
    ]


def showcase(dataset):
    """The descriptor whose top results the report shows: BA (or the first method) at the
    longest code, else the last siamese/triplet model."""
    cfg = dataset_cfg(dataset)
    if cfg["hashing"]:
        methods = config["hashing"]["methods"]
        return f"hashing/{cfg['hashing'][0]}/{'ba' if 'ba' in methods else methods[0]}/{max(config['hashing']['bits'])}"
    return f"metric/{cfg['metric_learning'][0]}/{config['metric_learning']['models'][-1]}"


def showcase_mode(dataset):
    return "L" if dataset_cfg(dataset)["kind"] in GRAYSCALE_KINDS else "RGB"


def report_files():
    """This configuration's tables and figures (see rules/report.smk)."""
    names = ["metrics.parquet", "results.tsv", "provenance.json", "table_retrieval_time.tsv", "table_retrieval_time.md"]
    names += [f"fig7_top10_{dataset}.png" for dataset in config["datasets"]]
    if evaluations("hashing"):
        names += ["table1_ba_map.tsv", "table1_ba_map.md", "table2_hashing_methods.tsv", "table2_hashing_methods.md"]
        names += ["fig4_finetune_accuracy.png", "fig6_precision_recall.png"]
    if ba_traces():
        names.append("fig5_ba_objective.png")
    if evaluations("metric"):
        names += ["table_metric_learning.tsv", "table_metric_learning.md", "fig8_metric_precision.png", "fig9_metric_map.png"]
    return names


def explorer_files(dataset, name):
    """The evaluation files ``name`` of every descriptor of ``dataset``, first seed: the explorer's input."""
    return [paths.evaluation(dataset, SEEDS[0], descriptor, name) for descriptor in descriptor_names(config, dataset)]


def all_targets():
    targets = [paths.report(f"explorer_{dataset}.html") for dataset in config["datasets"]]
    for dataset in config["datasets"]:
        protocol = protocol_of(dataset)
        for seed in SEEDS:
            targets += [paths.split(dataset, seed, protocol), paths.split_counts(dataset, seed, protocol)]
    return targets + [paths.report(name) for name in report_files()]


def folder_listing(root):
    """A digest of every file's relative path, size and modification time under ``root``: a
    param of folder datasets, so that adding, removing or replacing an image reruns the stage."""
    digest = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(root, followlinks=True)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            try:
                stat = os.stat(path)
                entry = f"{os.path.relpath(path, root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n"
            except OSError:  # a dangling link: the dataset stage reports it
                entry = f"{os.path.relpath(path, root)}\0missing\n"
            digest.update(entry.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def metric_outputs(name):
    return [paths.metric("{dataset}", "{seed}", "{backbone}", model, name) for model in config["metric_learning"]["models"]]


def method_descriptors(wc):
    """The descriptors of a hashing method's codes: one per code length."""
    return [f"hashing/{wc.backbone}/{wc.method}/{bits}" for bits in config["hashing"]["bits"]]


def code_evaluations(name):
    """One evaluation file ``name`` per code length of a (dataset, seed, backbone, method)."""
    return [paths.evaluation("{dataset}", "{seed}", f"hashing/{{backbone}}/{{method}}/{bits}", name) for bits in config["hashing"]["bits"]]


def metric_evaluations(name):
    """One evaluation file ``name`` per siamese/triplet model of a (dataset, seed, backbone)."""
    return [paths.evaluation("{dataset}", "{seed}", f"metric/{{backbone}}/{model}", name) for model in config["metric_learning"]["models"]]


# Output name -> (file name, caption, category, subcategory); captions live in workflow/report/.
REPORT_ITEMS = {
    "results": ("results.tsv", "results.rst", "Tables", None),
    "provenance": ("provenance.json", "provenance.rst", "Tables", None),
    "table1": ("table1_ba_map.tsv", "table1.rst", "Tables", "Hashing"),
    "table2": ("table2_hashing_methods.tsv", "table2.rst", "Tables", "Hashing"),
    "table_metric": ("table_metric_learning.tsv", "table_metric.rst", "Tables", "Siamese and triplet"),
    "timing": ("table_retrieval_time.tsv", "table_time.rst", "Tables", None),
    "fig4": ("fig4_finetune_accuracy.png", "fig4.rst", "Figures", "Hashing"),
    "fig5": ("fig5_ba_objective.png", "fig5.rst", "Figures", "Hashing"),
    "fig6": ("fig6_precision_recall.png", "fig6.rst", "Figures", "Hashing"),
    "fig8": ("fig8_metric_precision.png", "fig8.rst", "Figures", "Siamese and triplet"),
    "fig9": ("fig9_metric_map.png", "fig9.rst", "Figures", "Siamese and triplet"),
}
PLAIN_ITEMS = {
    "metrics": "metrics.parquet",
    "table1_md": "table1_ba_map.md",
    "table2_md": "table2_hashing_methods.md",
    "table_metric_md": "table_metric_learning.md",
    "timing_md": "table_retrieval_time.md",
}


def report_outputs():
    wanted = set(report_files())
    outputs = {}
    for name, (file, caption, category, subcategory) in REPORT_ITEMS.items():
        if file in wanted:
            outputs[name] = report(paths.report(file), caption=f"../report/{caption}", category=category, subcategory=subcategory)
    outputs.update({name: paths.report(file) for name, file in PLAIN_ITEMS.items() if file in wanted})
    return outputs


def showcases():
    first = SEEDS[0]
    return [
        {
            "dataset": d,
            "seed": first,
            "descriptor": showcase(d),
            "mode": showcase_mode(d),
            "ranking": paths.evaluation(d, first, showcase(d), "ranking"),
            "manifest": paths.manifest(d),
            "path": paths.report(f"fig7_top10_{d}.png"),
        }
        for d in config["datasets"]
    ]


def histories():
    return [
        {
            "run": f"{r['dataset']} · {r['backbone']}",
            "seed": r["seed"],
            "path": paths.backbone(r["dataset"], r["seed"], r["backbone"], "history.parquet"),
        }
        for r in hashing_runs()
    ]


def traces():
    return [{"run": f"{t['dataset']} · {t['backbone']}", "seed": t["seed"], "bits": t["bits"], "path": t["trace"]} for t in ba_traces()]


def entries():
    return [
        {**e, **{name: paths.evaluation(e["dataset"], e["seed"], e["descriptor"], name) for name in ("summary", "timing", "pr")}}
        for e in evaluations()
    ]
