"""Configuration: JSON-schema validation with defaults, plus the checks a schema cannot express.

``validate_config`` runs when the Snakefile is parsed, so a wrong key, type or value stops the run
before any job starts, with a message that names the key (``datasets.mnist.kind``).
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
IMAGENET_ARCHS = ("resnet18", "resnet50", "alexnet")
#: Dataset kinds whose pixels are stored once in a ``pixels.npy`` array (the others are image files).
PIXEL_ARRAY_KINDS = ("digits", "mnist", "fashion_mnist", "cifar10")
#: Dataset kinds whose images are grayscale; the others are read as RGB.
GRAYSCALE_KINDS = ("digits", "mnist", "fashion_mnist")
#: Image size of the array datasets' ``pixels.npy``.
NATIVE_SIZES = {"digits": 8, "mnist": 28, "fashion_mnist": 28, "cifar10": 32}
#: The siamese/triplet paper's models: model -> (the model whose FC8 it starts from, its training
#: objective); see cbir.metric_learning.
METRIC_MODELS = {
    "PT": (None, None),
    "FT": (None, "classification"),
    "SN-PT": ("PT", "contrastive"),
    "SN-FT": ("FT", "contrastive"),
    "SN-PT-FT": ("SN-PT", "classification"),
    "TN-PT": ("PT", "triplet"),
    "TN-FT": ("FT", "triplet"),
    "TN-PT-FT": ("TN-PT", "classification"),
}

#: The order the second paper's tables list them in.
METRIC_MODEL_ORDER = ("PT", "FT", "SN-PT", "SN-PT-FT", "SN-FT", "TN-PT", "TN-PT-FT", "TN-FT")


#: Keys of earlier versions, with what replaces them.
RENAMED = {"seed": "; give the repeats as a list, e.g. `seeds: [0, 1, 2]`"}


def native_mode(kind: str) -> str:
    """PIL mode of the dataset's images before any conversion."""
    return "L" if kind in GRAYSCALE_KINDS else "RGB"


def input_mode(arch: str, kind: str) -> str:
    """PIL mode a backbone reads from a dataset: RGB for ImageNet archs, the dataset's own for the
    small CNN."""
    return native_mode(kind) if arch == "smallcnn" else "RGB"


def pixels_are_cache(kind: str, mode: str, size: int) -> bool:
    """Whether a dataset's own ``pixels.npy`` already holds its images in ``mode`` at ``size``, so
    that no image cache is needed (see :mod:`cbir.image_cache`)."""
    return NATIVE_SIZES.get(kind) == size and mode == native_mode(kind)


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key."""


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _describe(error) -> str:
    """One line per schema error, naming the config key."""
    if error.validator in ("oneOf", "anyOf") and "description" in error.schema:
        return f"config key '{_key(error.absolute_path)}': {error.instance!r} is not valid, expected {error.schema['description']}"
    # Other compound errors (if/then) carry the precise cause in their context.
    while error.context:
        error = max(error.context, key=lambda e: len(e.absolute_path))
    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return "; ".join(f"config key '{_key(path + [name])}': unknown key{RENAMED.get(_key(path + [name]), hint)}" for name in extra)
    if error.validator == "required":
        missing = [name for name in error.validator_value if name not in error.instance]
        return "; ".join(f"config key '{_key(path + [name])}': required but missing" for name in missing)
    if error.validator == "propertyNames":
        return f"config key '{_key(path)}': name {error.instance!r} must use letters, digits, '_', '-' or '.'"
    return f"config key '{_key(path)}': {error.message}"


def validate_config(config: dict, schema_path: str | Path = SCHEMA_PATH) -> dict:
    """Validate ``config`` and return a copy with defaults filled in; raise ConfigError otherwise.

    Every schema error is reported at once, naming its key; then snakemake's ``validate`` fills
    in the defaults, and the checks a schema cannot express run on the result.
    """
    from snakemake.utils import validate

    with open(schema_path) as handle:
        schema = yaml.safe_load(handle)
    config = copy.deepcopy(config) if config is not None else {}
    errors = sorted(Draft202012Validator(schema).iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    problems = [_describe(e) for e in errors]
    if not problems:
        validate(config, str(schema_path), set_default=True)
        problems = _cross_checks(config)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(dict.fromkeys(problems)))
    return _sorted_keys(config)


def _sorted_keys(value):
    """Mappings with their keys in sorted order, recursively: rules see the same params however a
    config file orders its keys, so reordering a file reruns nothing."""
    if isinstance(value, dict):
        return {key: _sorted_keys(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(item) for item in value]
    return value


def _cross_checks(config: dict) -> list[str]:
    """What JSON schema cannot say: references between sections and per-kind requirements."""
    problems = []
    for name, dataset in config["datasets"].items():
        key = f"datasets.{name}"
        if dataset["protocol"] not in config["protocols"]:
            problems.append(f"config key '{key}.protocol': {dataset['protocol']!r} is not a key of 'protocols' ({', '.join(config['protocols'])})")
        elif (config["protocols"][dataset["protocol"]]["kind"] == "holidays") != (dataset["kind"] == "holidays"):
            problems.append(f"config key '{key}.protocol': the holidays protocol goes with the holidays dataset kind only")
        for pipeline in ("hashing", "metric_learning"):
            for backbone in dataset[pipeline]:
                if backbone not in config["backbones"]:
                    problems.append(f"config key '{key}.{pipeline}': {backbone!r} is not a key of 'backbones' ({', '.join(config['backbones'])})")
        if not dataset["hashing"] and not dataset["metric_learning"]:
            problems.append(f"config key '{key}.hashing': give backbones to hash, to metric_learning, or both")
        if dataset["kind"] == "imagefolder" and not dataset["root"]:
            problems.append(f"config key '{key}.root': an imagefolder dataset needs the folder to index")
        elif dataset["root"] is not None and not Path(dataset["root"]).exists():
            problems.append(f"config key '{key}.root': {dataset['root']} does not exist (relative to {Path.cwd()}); set root: null to download")
    unknown = sorted(set(config["hashing"]["ssdh"]["finetune"]) - set(_finetune_keys()))
    if unknown:
        problems.append(f"config key 'hashing.ssdh.finetune': unknown keys {', '.join(unknown)} (allowed: the backbone's finetune keys)")
    for name, backbone in config["backbones"].items():
        key = f"backbones.{name}"
        if backbone["weights"] == "imagenet" and backbone["arch"] not in IMAGENET_ARCHS:
            problems.append(f"config key '{key}.weights': no ImageNet weights for arch {backbone['arch']!r}")
        if backbone["feature_layer"] == "fc6" and backbone["arch"] != "alexnet":
            problems.append(f"config key '{key}.feature_layer': fc6 exists only in alexnet")
    return problems


class _StrictLoader(yaml.SafeLoader):
    """YAML that rejects a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"config key {key!r} appears twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1} of {key_node.start_mark.name})")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path) -> dict:
    """A YAML config file as a dict; a missing file, bad YAML or a duplicated key is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    with open(path) as handle:
        try:
            return yaml.load(handle, Loader=_StrictLoader)
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from err


def _finetune_keys() -> list[str]:
    with open(SCHEMA_PATH) as handle:
        schema = yaml.safe_load(handle)
    return list(schema["properties"]["backbones"]["additionalProperties"]["properties"]["finetune"]["properties"])


def load_config(path: str | Path) -> dict:
    """Read a YAML config file and validate it."""
    return validate_config(read_yaml(path))
