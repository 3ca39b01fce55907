"""Paths, config lookups and target lists shared by every stage."""

from cbir.config import GRAYSCALE_KINDS, METRIC_MODELS, PIXEL_ARRAY_KINDS
from cbir.paths import descriptor_names, descriptor_path, manifest_path

RESULTS = config["results_dir"]
REPORT = config["report_dir"]
ENV = "../../envs/cbir.yaml"


def dataset_cfg(name):
    return config["datasets"][name]


def protocol_of(dataset):
    return dataset_cfg(dataset)["protocol"]


def split_path(dataset):
    return f"{RESULTS}/{dataset}/splits/{protocol_of(dataset)}.parquet"


def all_targets():
    targets = []
    for dataset, cfg in config["datasets"].items():
        protocol = protocol_of(dataset)
        targets += [
            manifest_path(dataset),
            f"{RESULTS}/{dataset}/splits/{protocol}.parquet",
            f"{RESULTS}/{dataset}/splits/{protocol}_counts.tsv",
        ]
        targets.append(f"{REPORT}/fig7_top10_{dataset}.png")
    targets += [f"{REPORT}/metrics.csv", f"{REPORT}/table_retrieval_time.csv"]
    if evaluated("hashing"):
        targets += [f"{REPORT}/{name}" for name in ("table1_ba_map.csv", "table2_hashing_methods.csv", "fig4_finetune_accuracy.png", "fig6_precision_recall.png")]
    if ba_traces():
        targets.append(f"{REPORT}/fig5_ba_objective.png")
    if evaluated("metric"):
        targets += [f"{REPORT}/{name}" for name in ("table_metric_learning.csv", "fig8_metric_precision.png", "fig9_metric_map.png")]
    return targets


def descriptors(dataset):
    """Every descriptor the config asks for on ``dataset`` (see rules/evaluation.smk)."""
    return descriptor_names(config, dataset)


def backbone_cfg(name):
    return config["backbones"][name]


def training_params(name):
    """What fine-tuning depends on: everything of the backbone but the layer that is hashed."""
    return {k: v for k, v in backbone_cfg(name).items() if k != "feature_layer"}


def extraction_params(name):
    """What feature extraction (and the pretrained FC8) depends on: not the training recipe."""
    cfg = backbone_cfg(name)
    return {
        "arch": cfg["arch"],
        "weights": cfg["weights"],
        "input_size": cfg["input_size"],
        "finetune": {k: cfg["finetune"][k] for k in ("device", "workers")},
    }


def weights_file(name):
    """The backbone's weights file as an input (so that replacing it reruns), or nothing."""
    weights = backbone_cfg(name)["weights"]
    return [] if weights in ("none", "imagenet") else [weights]


def gpus(name):
    """GPUs a job of this backbone asks the scheduler for: only when the config says cuda."""
    return 1 if backbone_cfg(name)["finetune"]["device"] == "cuda" else 0


def features_path(dataset, backbone, stage, layer):
    return f"{RESULTS}/{dataset}/features/{backbone}/{stage}/{layer}.parquet"


def starts_from(model):
    """The model whose FC8 initialises ``model`` (None for PT and FT)."""
    return METRIC_MODELS[model][0]


def metric_dir(dataset, backbone, model):
    return f"{RESULTS}/{dataset}/metric/{backbone}/{model}"


# Descriptor names, the paths below results/<dataset>/ (see rules/evaluation.smk).
DESCRIPTOR = r"hashing/[^/]+/[^/]+/\d+|metric/[^/]+/[^/]+|features/[^/]+/(finetuned|pretrained)/[^/]+"


def descriptor_file(wc):
    return descriptor_path(RESULTS, wc.dataset, wc.descriptor)


def metric_model(descriptor):
    """The model name of a metric/<backbone>/<model> descriptor."""
    return descriptor.rsplit("/", 1)[1]


def evaluated(pipeline=None):
    """The evaluation and retrieval files of every descriptor, optionally of one pipeline."""
    entries = []
    for dataset in config["datasets"]:
        for descriptor in descriptors(dataset):
            if pipeline is None or descriptor.startswith(f"{pipeline}/"):
                entries.append(
                    {
                        "dataset": dataset,
                        "kind": dataset_cfg(dataset)["kind"],
                        "descriptor": descriptor,
                        "summary": f"{RESULTS}/{dataset}/evaluation/{descriptor}/summary.parquet",
                        "pr": f"{RESULTS}/{dataset}/evaluation/{descriptor}/pr.parquet",
                        "timing": f"{RESULTS}/{dataset}/retrieval/{descriptor}/timing.parquet",
                    }
                )
    return entries


def hashing_runs():
    """Each fine-tuned (dataset, backbone) and its training history."""
    return [
        {"dataset": d, "backbone": b, "history": f"{RESULTS}/{d}/backbones/{b}/history.parquet"}
        for d, cfg in config["datasets"].items()
        for b in cfg["hashing"]
    ]


def ba_traces():
    """The binary autoencoder's training traces, when BA is among the hashing methods."""
    if "ba" not in config["hashing"]["methods"]:
        return []
    return [
        {"name": f"{r['dataset']} · {r['backbone']}", "bits": bits, "trace": f"{RESULTS}/{r['dataset']}/hashing/{r['backbone']}/ba/{bits}/trace.parquet"}
        for r in hashing_runs()
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
