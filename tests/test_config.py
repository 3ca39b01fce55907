"""The config schema: the shipped configs are valid; bad ones stop with a message naming the key."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from cbir.config import ConfigError, load_config, validate_config

from conftest import REPO

BASE = yaml.safe_load((REPO / "config.yaml").read_text())


@pytest.mark.parametrize("path", ["config.yaml", *sorted(str(p.relative_to(REPO)) for p in (REPO / "config").glob("*.yaml"))])
def test_shipped_configs_are_valid(path, tmp_path):
    config = yaml.safe_load((REPO / path).read_text())
    for dataset in config["datasets"].values():
        if dataset.get("root"):  # local copies that may not be on this machine
            dataset["root"] = str(tmp_path)
    assert validate_config(config)["datasets"]


def test_defaults_are_filled_in():
    config = validate_config({k: v for k, v in BASE.items() if k not in ("seeds", "hashing", "evaluation")})
    assert config["seeds"] == [0] and config["evaluation"]["neighbours"] == 50 and config["hashing"]["bits"] == [12, 24, 32, 48] and config["evaluation"]["topk"] == 1000
    assert config["backbones"]["smallcnn"]["finetune"]["momentum"] == 0.9


def _set(path, value):
    def mutate(config):
        *parents, last = path.split(".")
        node = config
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return mutate


def _delete(path):
    def mutate(config):
        *parents, last = path.split(".")
        node = config
        for key in parents:
            node = node[key]
        del node[last]

    return mutate


BAD = {
    "misspelt top-level key": (_set("sede", 1), "sede"),
    "misspelt nested key": (_set("backbones.smallcnn.finetune.lrate", 0.1), "backbones.smallcnn.finetune.lrate"),
    "wrong type": (_set("seeds", "zero"), "seeds"),
    "negative seed": (_set("seeds", [0, -1]), "seeds.1"),
    "repeated seed": (_set("seeds", [1, 1]), "seeds"),
    "no seeds": (_set("seeds", []), "seeds"),
    "a single seed of earlier versions": (_set("seed", 0), "seed"),
    "unknown dataset kind": (_set("datasets.digits.kind", "imagenet"), "datasets.digits.kind"),
    "missing required key": (_delete("datasets.digits.protocol"), "datasets.digits.protocol"),
    "undefined protocol": (_set("datasets.digits.protocol", "paper-mnist"), "datasets.digits.protocol"),
    "undefined backbone": (_set("datasets.digits.hashing", ["resnet50"]), "datasets.digits.hashing"),
    "zero queries": (_set("protocols.digits.query_per_class", 0), "protocols.digits.query_per_class"),
    "count neither integer nor all": (_set("protocols.digits.database_per_class", "most"), "protocols.digits.database_per_class"),
    "bits above 64": (_set("hashing.bits", [12, 128]), "hashing.bits.1"),
    "unknown hashing method": (_set("hashing.methods", ["ba", "kmeans"]), "hashing.methods.1"),
    "duplicate bit lengths": (_set("hashing.bits", [12, 12]), "hashing.bits"),
    "non-positive learning rate": (_set("backbones.smallcnn.finetune.lr", 0), "backbones.smallcnn.finetune.lr"),
    "unknown arch": (_set("backbones.smallcnn.arch", "vgg16"), "backbones.smallcnn.arch"),
    "imagenet weights for the small CNN": (_set("backbones.smallcnn.weights", "imagenet"), "backbones.smallcnn.weights"),
    "fc6 outside alexnet": (_set("backbones.smallcnn.feature_layer", "fc6"), "backbones.smallcnn.feature_layer"),
    "imagefolder without root": (_set("datasets.digits.kind", "imagefolder"), "datasets.digits.root"),
    "holidays protocol on another dataset": (_set("protocols.digits", {"kind": "holidays"}), "datasets.digits.protocol"),
    "option of another protocol kind": (_set("protocols.digits", {"kind": "holidays", "query_per_class": 5}), "protocols.digits.query_per_class"),
    "unsafe dataset name": (lambda c: c["datasets"].update({"my data/set": c["datasets"]["digits"]}), "datasets"),
    "unknown device": (_set("backbones.smallcnn.finetune.device", "tpu"), "backbones.smallcnn.finetune.device"),
    "empty datasets": (_set("datasets", {}), "datasets"),
    "a local copy that does not exist": (_set("datasets.digits.root", "/no/such/folder"), "datasets.digits.root"),
    "results under the file-system root": (_set("results_dir", ""), "results_dir"),
    "report under the file-system root": (_set("report_dir", "/"), "report_dir"),
    "size neither integer, all nor up_to": (_set("protocols.digits.query_per_class", {"at_most": 3}), "protocols.digits.query_per_class"),
}


@pytest.mark.parametrize("case", sorted(BAD), ids=sorted(BAD))
def test_bad_config_names_the_key(case):
    mutate, key = BAD[case]
    config = copy.deepcopy(BASE)
    mutate(config)
    with pytest.raises(ConfigError, match=rf"config key '{re.escape(key)}'"):
        validate_config(config)


def test_all_problems_reported_at_once():
    config = copy.deepcopy(BASE)
    config["seeds"] = "x"
    config["evaluation"]["topk"] = 0
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    assert "'seeds'" in str(info.value) and "'evaluation.topk'" in str(info.value)


def test_duplicated_key_is_named_with_its_lines(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text((REPO / "config.yaml").read_text() + "\nevaluation:\n  topk: 10\n")
    with pytest.raises(ConfigError, match=r"config key 'evaluation' appears twice \(lines \d+ and \d+ of .*twice.yaml\)"):
        load_config(path)


def test_missing_or_broken_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("datasets: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)


def test_key_order_does_not_matter():
    """Rules' params come from the config: reordering a file's keys must not change them."""
    reordered = {key: BASE[key] for key in reversed(list(BASE))}
    reordered["protocols"] = {"digits": dict(reversed(list(BASE["protocols"]["digits"].items())))}
    first, second = validate_config(BASE), validate_config(reordered)
    assert repr(first) == repr(second)


def test_the_old_single_seed_key_says_what_replaces_it():
    config = copy.deepcopy(BASE)
    config["seed"] = 3
    with pytest.raises(ConfigError, match=r"config key 'seed': unknown key; give the repeats as a list, e.g. `seeds: \[0, 1, 2\]`"):
        validate_config(config)


def schema_keys(node) -> set[str]:
    """Every property name anywhere in a JSON schema (nested objects, $defs, oneOf, items)."""
    if isinstance(node, list):
        return set().union(*map(schema_keys, node))
    if not isinstance(node, dict):
        return set()
    properties = node.get("properties", {})
    children = [*properties.values(), *(value for key, value in node.items() if key != "properties")]
    return set(properties) | set().union(*map(schema_keys, children))


def test_every_config_key_is_documented():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    text = (REPO / "config/README.md").read_text()
    documented = {word for span in re.findall(r"`([^`]+)`", text) for word in re.findall(r"[A-Za-z_][A-Za-z_0-9]*", span)}
    assert sorted(schema_keys(schema) - documented) == []
