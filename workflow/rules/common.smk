"""Paths, config lookups and target lists shared by every stage."""

from cbir.config import PIXEL_ARRAY_KINDS

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
    for dataset in config["datasets"]:
        protocol = protocol_of(dataset)
        targets += [
            manifest_path(dataset),
            f"{RESULTS}/{dataset}/splits/{protocol}.parquet",
            f"{RESULTS}/{dataset}/splits/{protocol}_counts.tsv",
        ]
    return targets
