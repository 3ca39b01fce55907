"""The config schema: the shipped configs are valid, defaults filled in, every key documented
(bad configs: tests/hostile/test_bad_configs.py)."""

from __future__ import annotations

import copy

import pytest
import yaml

from cbir.config import ConfigError, load_config, validate_config
from cbir.methods import FEATURE_HASHERS, hasher_spec

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


def test_the_reference_documents_every_key_the_schema_checks():
    """The documentation's configuration reference is generated from the schema: every key
    there, with a meaning, down to the generated ssdh.finetune keys and the per-kind ones."""
    from cbir.config import load_schema, reference_markdown, reference_rows

    rows = {row["key"]: row for row in reference_rows()}
    assert [key for key, row in rows.items() if not row["meaning"]] == []
    for key in ("seeds", "datasets.<name>.kind", "protocols.<name>.train_per_class", "backbones.<name>.finetune.precision", "hashing.ssdh.finetune.epochs", "hashing.ba.mu_schedule.start", "evaluation.neighbours"):
        assert key in rows
    finetune = load_schema()["properties"]["backbones"]["additionalProperties"]["properties"]["finetune"]["properties"]
    assert {f"backbones.<name>.finetune.{k}" for k in finetune} <= set(rows)
    assert rows["hashing.ssdh.finetune.epochs"]["default"] == "" and rows["backbones.<name>.finetune.epochs"]["default"] == "`10`"
    assert reference_markdown().count("\n") == len(rows) + 2


def test_a_variant_is_its_method_with_its_options_over_the_method_s_section():
    config = copy.deepcopy(yaml.safe_load((REPO / "config.yaml").read_text()))
    config["hashing"]["ba"] = {"C": 10.0, "max_iter": 30}
    config["hashing"]["variants"] = {"ba_pca": {"method": "ba", "init": "pca", "max_iter": 5}}
    config["hashing"]["methods"].append("ba_pca")
    config["hashing"]["train_sample"] = {"ba_pca": 100}
    config = validate_config(config)
    assert hasher_spec(config, "ba_pca") == ("ba", {"C": 10.0, "max_iter": 5, "init": "pca"})
    assert hasher_spec(config, "ba") == ("ba", {"C": 10.0, "max_iter": 30})
    assert hasher_spec(config, "itq") == ("itq", {})


def test_the_feature_hashers_are_the_registry_s():
    from cbir.hashing import HASHERS

    assert set(FEATURE_HASHERS) == set(HASHERS)
