"""Where the pipeline puts each dataset's descriptors, shared by the workflow and the CLI.

A descriptor is named by its place under ``<results_dir>/<dataset>/``:

``hashing/<backbone>/<method>/<bits>``  hash codes of the fine-tuned backbone's features
``metric/<backbone>/<model>``          FC8 descriptors of a siamese/triplet-paper model
``features/<backbone>/<stage>/<layer>`` the features themselves (Euclidean search, no hashing)
"""

from __future__ import annotations


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


def descriptor_path(results_dir: str, dataset: str, descriptor: str) -> str:
    """The descriptor file of ``descriptor``."""
    if descriptor.startswith("features/"):
        return f"{results_dir}/{dataset}/{descriptor}.parquet"
    return f"{results_dir}/{dataset}/{descriptor}/descriptors.parquet"


def manifest_path(dataset: str) -> str:
    return f"resources/datasets/{dataset}/manifest.parquet"


def backbone_model_path(results_dir: str, dataset: str, backbone: str) -> str:
    """The backbone fine-tuned on ``dataset``."""
    return f"{results_dir}/{dataset}/backbones/{backbone}/model.pt"
