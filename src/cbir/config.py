"""Configuration: JSON-schema validation with defaults, plus the checks a schema cannot express.

``validate_config`` runs when the Snakefile is parsed, so a wrong key, type or value stops the run
before any job starts, with a message that names the key (``datasets.mnist.kind``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator

from cbir import plugins
from cbir.methods import DEEP_HASHERS, PLUGIN_SECTION, deep_hashers, feature_hashers, network_hashers, plugin_checks, plugin_sections

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
    schema = load_schema(schema_path)
    config = copy.deepcopy(config) if config is not None else {}
    errors = sorted(Draft202012Validator(schema).iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    problems = [_describe(e) for e in errors]
    if not problems:
        plugin_sections(config, schema)
        _fill_defaults(config, schema)
        problems = [*_protocol_checks(config), *_cross_checks(config), *plugin_checks(config, schema)] or _split_checks(config)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(dict.fromkeys(problems)))
    return _sorted_keys(config)


def _fill_defaults(config: dict, schema: dict) -> None:
    """Fill in the schema's defaults, in place (as snakemake's ``validate(set_default=True)``, but
    with the generated schema of :func:`load_schema`)."""
    from jsonschema import validators

    def set_defaults(validator, properties, instance, subschema):
        if isinstance(instance, dict):
            for name, check in properties.items():
                if "default" in check:
                    instance.setdefault(name, copy.deepcopy(check["default"]))
        yield from Draft202012Validator.VALIDATORS["properties"](validator, properties, instance, subschema)

    validators.extend(Draft202012Validator, {"properties": set_defaults})(schema).validate(config)


def load_schema(schema_path: str | Path = SCHEMA_PATH) -> dict:
    """The config schema, with its generated parts: each deep hashing method's section takes the
    training keys of ``$defs.deep_training``, whose ``finetune`` takes the keys and checks of a
    backbone's ``finetune`` without their defaults (it holds changes to a recipe); each installed
    plug-in (:mod:`cbir.plugins`) has a section of options under ``hashing``, marked
    :data:`cbir.methods.PLUGIN_SECTION` and checked against the plug-in by :func:`cbir.methods.plugin_checks`."""
    with open(schema_path) as handle:
        schema = yaml.safe_load(handle)
    recipe = schema["properties"]["backbones"]["additionalProperties"]["properties"]["finetune"]["properties"]
    training = copy.deepcopy(schema["$defs"]["deep_training"]["properties"])
    training["finetune"]["additionalProperties"] = False
    training["finetune"]["properties"] = {key: {k: v for k, v in check.items() if k != "default"} for key, check in recipe.items()}
    hashing = schema["properties"]["hashing"]["properties"]
    for method in DEEP_HASHERS:
        hashing[method]["properties"] = {**copy.deepcopy(training), **hashing[method]["properties"]}
    for group in (plugins.HASHERS, plugins.LOSSES):
        for name in plugins.names(group):
            if name not in hashing:  # a name of cbir's own is refused when a config uses it (plugin_checks)
                hashing[name] = {"description": f"options of the plug-in `{name}` ({group}; docs/plugins.md)", "type": "object", PLUGIN_SECTION: group}
                if group == plugins.LOSSES:
                    hashing[name]["properties"] = copy.deepcopy(training)
    # A variant of hashing.variants takes the options of its method's section.
    variant = hashing["variants"]["additionalProperties"]
    variant["allOf"] = [
        {
            "if": {"properties": {"method": {"const": method}}},
            "then": {"properties": {"method": variant["properties"]["method"], **hashing[method]["properties"]}, "additionalProperties": False},
        }
        for method in variant["properties"]["method"]["enum"]
    ]
    return schema


def reference_rows(schema: dict | None = None) -> list[dict]:
    """Every key of the schema as a row of the configuration reference: ``key`` (a dotted path,
    ``<name>`` for names the user chooses), ``allowed`` (type, values, range), ``default`` and
    ``meaning``, in the schema's order. The documentation site renders them, so that the
    reference cannot drift from what the validation checks."""
    schema = schema or load_schema()
    definitions = schema.get("$defs", {})

    def resolved(node: dict) -> dict:
        if "$ref" in node:
            return {**definitions[node["$ref"].rsplit("/", 1)[1]], **{k: v for k, v in node.items() if k != "$ref"}}
        return node

    def allowed(node: dict) -> str:
        node = resolved(node)
        if "enum" in node:
            return r" \| ".join(f"`{v}`" for v in node["enum"])
        if "const" in node:
            return f"`{node['const']}`"
        if "oneOf" in node or "anyOf" in node:
            return " or ".join(allowed(option) for option in node.get("oneOf", node.get("anyOf")))
        kinds = node.get("type", "object" if "properties" in node else "any")
        text = " or ".join(kinds) if isinstance(kinds, list) else kinds
        if text == "array" and "items" in node:
            text = f"list of {allowed(node['items'])}"
        bounds = [f"≥ {node['minimum']}" if "minimum" in node else "", f"> {node['exclusiveMinimum']}" if "exclusiveMinimum" in node else "", f"≤ {node['maximum']}" if "maximum" in node else ""]
        return " ".join([text, *filter(None, bounds)])

    rows = []

    def walk(node: dict, path: str, required: set) -> None:
        node = resolved(node)
        properties = dict(node.get("properties", {}))
        for branch in node.get("allOf", []):  # per-kind keys (protocols): merged
            for key, child in branch.get("then", {}).get("properties", {}).items():
                if child and key not in properties:
                    properties[key] = child
        for option in node.get("oneOf", []) + node.get("anyOf", []):  # a mapping among the forms a key takes
            properties.update({key: child for key, child in option.get("properties", {}).items() if key not in properties})
        for key, child in properties.items():
            child = resolved(child)
            key_path = f"{path}.{key}" if path else key
            default = child.get("default", "required" if key in required else "")
            rows.append({"key": key_path, "allowed": allowed(child), "default": "" if default == "" else ("required" if default == "required" else f"`{default if isinstance(default, str) else json.dumps(default)}`"), "meaning": " ".join(str(child.get("description", "")).split())})
            walk(child, key_path, set(child.get("required", [])))
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            walk(extra, f"{path}.<name>", set(extra.get("required", [])))

    walk(schema, "", set(schema.get("required", [])))
    return rows


def reference_markdown(schema: dict | None = None) -> str:
    """The configuration reference as a Markdown table (see :func:`reference_rows`)."""
    lines = ["| key | allowed | default | meaning |", "| --- | --- | --- | --- |"]
    for row in reference_rows(schema):
        meaning = row["meaning"].replace("|", r"\|")
        lines.append(f"| `{row['key']}` | {row['allowed']} | {row['default']} | {meaning} |")
    return "\n".join(lines) + "\n"


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
    hashing = config["hashing"]
    known = (*feature_hashers(), *network_hashers())
    for name in hashing["variants"]:
        if name in known:
            problems.append(f"config key 'hashing.variants.{name}': {name!r} is a built-in method or a plug-in; give the variant a name of its own")
    for i, method in enumerate(hashing["methods"]):
        if method not in known and method not in hashing["variants"]:
            problems.append(f"config key 'hashing.methods.{i}': {method!r} is neither a method ({', '.join(known)}) nor a key of 'hashing.variants'")
    if isinstance(hashing["train_sample"], dict):
        for method in hashing["train_sample"]:
            if method not in feature_hashers() and method not in hashing["variants"]:
                problems.append(f"config key 'hashing.train_sample.{method}': not a method fitted on features ({', '.join(feature_hashers())}) nor a key of 'hashing.variants'")
    for name, dataset in config["datasets"].items():
        key = f"datasets.{name}"
        for pipeline in ("hashing", "metric_learning"):
            for backbone in dataset[pipeline]:
                if backbone not in config["backbones"]:
                    problems.append(f"config key '{key}.{pipeline}': {backbone!r} is not a key of 'backbones' ({', '.join(config['backbones'])})")
        if not dataset["hashing"] and not dataset["metric_learning"]:
            problems.append(f"config key '{key}.hashing': give backbones to hash, to metric_learning, or both")
        end_to_end = [m for m in hashing["methods"] if m in deep_hashers()]
        if dataset["kind"] == "multilabel" and dataset["hashing"] and end_to_end:
            # The fine-tuning loop carries one label per image; a hash layer on the features takes label sets.
            problems.append(f"config key 'hashing.methods': {', '.join(end_to_end)} train end to end, on one label per image; the multi-label dataset {name!r} takes their head-only training ({', '.join(m + '_head' for m in end_to_end)})")
        if dataset["kind"] in ("imagefolder", "multilabel") and not dataset["root"]:
            problems.append(f"config key '{key}.root': a dataset of kind {dataset['kind']} needs the folder to index")
        elif dataset["root"] is not None and not Path(dataset["root"]).exists():
            problems.append(f"config key '{key}.root': {dataset['root']} does not exist (relative to {Path.cwd()}); set root: null to download")
        elif dataset["root"] is not None and not Path(dataset["root"]).is_dir():
            problems.append(f"config key '{key}.root': {dataset['root']} is a file; give the folder that holds the dataset")
        elif (dataset["kind"] == "multilabel") != (dataset["labels"] is not None):
            problems.append(f"config key '{key}.labels': " + ("a multilabel dataset needs its labels table" if dataset["labels"] is None else "only a multilabel dataset has a labels table"))
        elif dataset["labels"] is not None and not (Path(dataset["root"]) / dataset["labels"]).is_file():
            problems.append(f"config key '{key}.labels': no file {Path(dataset['root']) / dataset['labels']} (relative to {Path.cwd()})")
    for key in ("results_dir", "report_dir"):
        blocker = next((p for p in (Path(config[key]), *Path(config[key]).parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            problems.append(f"config key '{key}': {blocker} is a file, so {config[key]} cannot be a folder")
    for name, backbone in config["backbones"].items():
        key = f"backbones.{name}"
        if backbone["weights"] == "imagenet" and backbone["arch"] not in IMAGENET_ARCHS:
            problems.append(f"config key '{key}.weights': no ImageNet weights for arch {backbone['arch']!r}")
        if "width" in backbone and backbone["arch"] != "smallcnn":
            problems.append(f"config key '{key}.width': only smallcnn has a width; {backbone['arch']} is torchvision's")
        if backbone["feature_layer"] == "fc6" and backbone["arch"] != "alexnet":
            problems.append(f"config key '{key}.feature_layer': fc6 exists only in alexnet")
        if backbone["weights"] not in ("none", "imagenet"):
            # A file the workflow writes (under results_dir) is made before it is read; any other must be there.
            for seed in config["seeds"]:
                weights = Path(backbone["weights"].replace("{seed}", str(seed)))
                results = Path(config["results_dir"]).absolute()
                if not weights.absolute().is_relative_to(results) and not weights.is_file():
                    problems.append(f"config key '{key}.weights': no weights file {weights} (relative to {Path.cwd()})")
                    break
    return problems


def _protocol_checks(config: dict) -> list[str]:
    """Each dataset's protocol defined; the presets the datasets name are added to ``protocols``, so that
    every stage reads a protocol the same way. A protocol of a preset's name is an error rather than a
    silent redefinition of it."""
    from cbir.splits import PRESETS

    problems = []
    for name, protocol in config["protocols"].items():
        # A preset's own definition is accepted back (a validated config, validated again); any other is refused.
        if name in PRESETS and any(protocol.get(key) != value for key, value in PRESETS[name].items()):
            problems.append(f"config key 'protocols.{name}': {name!r} is a preset (docs: Concepts); name your protocol otherwise, or drop it to use the preset")
        elif protocol.get("database_per_class") == "rest" and not isinstance(protocol.get("train_per_class"), int):
            problems.append(f"config key 'protocols.{name}.train_per_class': database_per_class `rest` (neither query nor training) needs a number here")
    for name, dataset in config["datasets"].items():
        key, protocol = f"datasets.{name}.protocol", dataset["protocol"]
        if protocol in PRESETS:
            config["protocols"].setdefault(protocol, copy.deepcopy(PRESETS[protocol]))
        if protocol not in config["protocols"]:
            problems.append(f"config key '{key}': {protocol!r} is neither a key of 'protocols' nor a preset ({', '.join(PRESETS)})")
        elif (config["protocols"][protocol]["kind"] == "holidays") != (dataset["kind"] == "holidays"):
            problems.append(f"config key '{key}': the holidays protocol goes with the holidays dataset kind only")
    return problems


def _split_checks(config: dict) -> list[str]:
    """Each protocol sampled on its dataset's manifest, where the dataset stage has written one:
    a split that asks a class for more images than it has stops the run before any job."""
    from cbir.paths import Layout

    problems = []
    for name, dataset in config["datasets"].items():
        manifest_path = Path(Layout.manifest(name))
        if not manifest_path.is_file():
            continue  # checked by the split stage, once the dataset is there
        from cbir.datasets import read_manifest
        from cbir.splits import PRESETS, SplitError, sample_split

        try:
            sample_split(read_manifest(manifest_path), config["protocols"][dataset["protocol"]], config["seeds"][0], dataset["protocol"])
        except SplitError as err:
            key, detail = str(err).split(": ", 1)
            if dataset["protocol"] in PRESETS:  # not a key of the user's: name the preset and its option
                key, detail = f"datasets.{name}.protocol", f"preset {dataset['protocol']!r}, {key.rsplit('.', 1)[1]}: {detail}"
            problems.append(f"config key '{key}': {detail} (dataset {name}, as read into {manifest_path})")
        except (OSError, ValueError):
            pass  # an unreadable manifest: the dataset stage rewrites it and names the problem
    return problems


def typed_overrides(config: dict, overrides: dict) -> dict:
    """``config`` with the structured values of ``snakemake --config`` read as YAML reads them.

    Snakemake reads ``--config seeds=[2]`` with every scalar inside a list or mapping a string
    (``['2']``); here each such string is read again as a YAML scalar (``2``), as it would be
    in a config file."""

    def retyped(value):
        if isinstance(value, dict):
            return {k: retyped(v) for k, v in value.items()}
        if isinstance(value, list):
            return [retyped(v) for v in value]
        if isinstance(value, str):
            try:
                parsed = yaml.safe_load(value)
            except yaml.YAMLError:
                return value
            return parsed if parsed is None or isinstance(parsed, (bool, int, float, str)) else value
        return value

    def apply(target: dict, changes: dict) -> None:
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(target.get(key), dict):
                apply(target[key], value)
            else:
                target[key] = retyped(value)

    config = copy.deepcopy(config) if config is not None else {}
    apply(config, dict(overrides or {}))
    return config


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
    with open(path, "rb") as handle:
        try:
            config = yaml.load(handle, Loader=_StrictLoader)
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(err).split())}") from None
    if config is None:
        raise ConfigError(f"config file {path} is empty")
    if not isinstance(config, dict):
        raise ConfigError(f"config file {path} holds a {type(config).__name__}, not a mapping of config keys (e.g. `seeds: [0]`)")
    return config


def load_config(path: str | Path) -> dict:
    """Read a YAML config file and validate it."""
    return validate_config(read_yaml(path))
