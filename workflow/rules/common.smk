"""Paths, config lookups and target lists shared by every stage."""

from cbir.config import METRIC_MODELS, PIXEL_ARRAY_KINDS

RESULTS = config["results_dir"]
ENV = "../../envs/cbir.yaml"


def dataset_cfg(name):
    return config["datasets"][name]


def protocol_of(dataset):
    return dataset_cfg(dataset)["protocol"]


def manifest_path(dataset):
    return f"resources/datasets/{dataset}/manifest.parquet"


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
        for descriptor in descriptors(dataset):
            targets += [
                f"{RESULTS}/{dataset}/evaluation/{descriptor}/summary.parquet",
                f"{RESULTS}/{dataset}/retrieval/{descriptor}/ranking.parquet",
            ]
    return targets


def descriptors(dataset):
    """Every descriptor the config asks for on ``dataset`` (see rules/evaluation.smk)."""
    cfg = dataset_cfg(dataset)
    names = []
    for backbone in cfg["backbones"]:
        if "hashing" in cfg["pipelines"]:
            names.append(f"features/{backbone}/finetuned/{backbone_cfg(backbone)['feature_layer']}")
            names += [f"hashing/{backbone}/{m}/{b}" for m in config["hashing"]["methods"] for b in config["hashing"]["bits"]]
        if "metric_learning" in cfg["pipelines"]:
            names += [f"metric/{backbone}/{model}" for model in config["metric_learning"]["models"]]
    return names


def backbone_cfg(name):
    return config["backbones"][name]


def training_params(name):
    """What fine-tuning depends on: everything of the backbone but the layer that is hashed."""
    return {k: v for k, v in backbone_cfg(name).items() if k != "feature_layer"}


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
    if wc.descriptor.startswith("features/"):
        return f"{RESULTS}/{wc.dataset}/{wc.descriptor}.parquet"
    return f"{RESULTS}/{wc.dataset}/{wc.descriptor}/descriptors.parquet"
