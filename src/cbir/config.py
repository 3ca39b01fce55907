"""Configuration: JSON-schema validation with defaults, plus the checks a schema cannot express.

``validate_config`` runs when the Snakefile is parsed, so a wrong key, type or value stops the run
before any job starts, with a message that names the key (``datasets.mnist.kind``).
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator, validators

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
IMAGENET_ARCHS = ("resnet18", "resnet50", "alexnet")
#: Dataset kinds whose pixels are stored once in a ``pixels.npy`` array (the others are image files).
PIXEL_ARRAY_KINDS = ("digits", "mnist", "fashion_mnist", "cifar10")
#: Dataset kinds whose images are grayscale; the others are read as RGB.
GRAYSCALE_KINDS = ("digits", "mnist", "fashion_mnist")
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


#: Keys of earlier versions, with what replaces them.
RENAMED = {"seed": "; give the repeats as a list, e.g. `seeds: [0, 1, 2]`"}


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key."""


def _with_defaults(validator_class):
    """A validator that also fills in each property's ``default`` (the jsonschema FAQ recipe)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if isinstance(subschema, dict) and "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(Draft202012Validator)


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
    """Validate ``config`` and return a copy with defaults filled in; raise ConfigError otherwise."""
    with open(schema_path) as handle:
        schema = yaml.safe_load(handle)
    config = copy.deepcopy(config) if config is not None else {}
    errors = sorted(_Validator(schema).iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    problems = [_describe(e) for e in errors]
    if not problems:
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
    for name, backbone in config["backbones"].items():
        key = f"backbones.{name}"
        if backbone["weights"] == "imagenet" and backbone["arch"] not in IMAGENET_ARCHS:
            problems.append(f"config key '{key}.weights': no ImageNet weights for arch {backbone['arch']!r}")
        if backbone["feature_layer"] == "fc6" and backbone["arch"] != "alexnet":
            problems.append(f"config key '{key}.feature_layer': fc6 exists only in alexnet")
    return problems


def load_config(path: str | Path) -> dict:
    """Read a YAML config file and validate it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    with open(path) as handle:
        try:
            config = yaml.safe_load(handle)
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
    return validate_config(config)
