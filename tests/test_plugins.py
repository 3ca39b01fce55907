"""Plug-ins: a hasher and a deep hashing loss of an outside package, registered as entry points, go
through the config, the workflow and the report like built-in methods. The package is the one of
docs/plugins.md, read from that page, so that its code is the code the page shows."""

from __future__ import annotations

import json
import os
import re
import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cbir import plugins
from cbir.config import ConfigError, validate_config
from cbir.methods import feature_hashers, hasher_spec, network_hashers
from conftest import REPO
from workflow import snakemake

DOC = REPO / "docs" / "plugins.md"
BASE = yaml.safe_load((REPO / "config.yaml").read_text())


def write_package(root: Path, entry_points: dict | None = None, files: dict | None = None) -> Path:
    """The plug-in package of docs/plugins.md under ``root`` as an installed package would be: its
    modules and a ``.dist-info`` folder with its pyproject's entry points (plus ``entry_points``,
    ``{group: {name: "module:attr"}}``), which importlib.metadata finds when ``root`` is on the path."""
    blocks = dict(re.findall(r'```\w+ title="([^"]+)"\n(.*?)\n```', DOC.read_text(), re.S))
    project = tomllib.loads(blocks.pop("pyproject.toml"))["project"]
    for name, text in {**blocks, **(files or {})}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    groups = {group: {**project["entry-points"].get(group, {}), **(entry_points or {}).get(group, {})} for group in (plugins.HASHERS, plugins.LOSSES)}
    info = root / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    (info / "entry_points.txt").write_text("".join(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n" for group, eps in groups.items()))
    return root


@pytest.fixture
def install(tmp_path, monkeypatch):
    """Puts a package of :func:`write_package` on this process's path and its subprocesses'."""

    def install(**changes) -> Path:
        root = write_package(tmp_path / "site", **changes)
        monkeypatch.syspath_prepend(str(root))
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
        plugins.entry_points.cache_clear()
        return root

    yield install
    for module in [m for m in sys.modules if m.split(".")[0] == "cbir_extras"]:
        del sys.modules[module]
    plugins.entry_points.cache_clear()
    plugins.display_name.cache_clear()


def config_with(**hashing) -> dict:
    config = yaml.safe_load(yaml.safe_dump(BASE))
    config["hashing"].update(hashing)
    return config


def problems(config: dict) -> str:
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    return str(err.value)


def test_plugins_are_found_without_importing_them(install):
    before = validate_config(config_with(methods=["itq", "ba"]))
    install()
    assert plugins.names(plugins.HASHERS) == ("pcarr",) and plugins.names(plugins.LOSSES) == ("codebook",)
    assert "pcarr" in feature_hashers() and {"codebook", "codebook_head"} <= set(network_hashers())
    assert validate_config(config_with(methods=["itq", "ba"])) == before  # installing a plug-in changes no config
    assert not any(m.startswith("cbir_extras") for m in sys.modules)  # a config imports the plug-ins it uses only


def test_a_plugin_named_without_a_section_gets_the_defaults(install):
    install()
    config = validate_config(config_with(methods=["pcarr", "codebook_head"]))
    assert config["hashing"]["pcarr"] == {} and config["hashing"]["codebook"]["head_only"]["epochs"] == 30


def test_config_takes_plugins_with_their_options_and_the_training_keys(install):
    install()
    config = validate_config(config_with(methods=["itq", "pcarr", "codebook", "codebook_head"], pcarr={"rotate": False}, codebook={"scale": 2.0}))
    assert hasher_spec(config, "pcarr") == ("pcarr", {"rotate": False})
    section = config["hashing"]["codebook"]
    assert section["scale"] == 2.0 and section["joint"] is True and section["head_only"]["epochs"] == 30


def test_unknown_options_are_named_with_their_key(install):
    install()
    text = problems(config_with(methods=["pcarr", "codebook_head"], pcarr={"rotat": True, "n_bits": 8}, codebook={"scal": 1.0}))
    assert "config key 'hashing.pcarr.rotat': unknown option of entry point pcarr = 'cbir_extras.pcarr:PCARR'" in text
    assert "config key 'hashing.pcarr.n_bits'" in text and "it takes rotate" in text
    assert "config key 'hashing.codebook.scal': unknown option of entry point codebook" in text and "it takes scale" in text
    # a section is checked even when its method is not named
    assert "config key 'hashing.codebook.head_only.epoch'" in problems(config_with(codebook={"head_only": {"epoch": 3}}))


def test_a_plugin_named_like_a_builtin_method_is_refused(install):
    install(entry_points={plugins.HASHERS: {"itq": "cbir_extras.pcarr:PCARR"}, plugins.LOSSES: {"ba": "cbir_extras.codebook:Codebook"}})
    text = problems(config_with(methods=["itq", "ba_head", "pcarr"]))
    assert "config key 'hashing.methods.0': 'itq' is cbir's own, and also entry point itq = 'cbir_extras.pcarr:PCARR' (group cbir.hashers" in text
    assert "config key 'hashing.methods.1': 'ba_head' is cbir's own, and also entry point ba = " in text
    assert "hashing.methods.2" not in text


def test_a_broken_entry_point_is_named(install):
    hashers = {"missing": "cbir_extras.nowhere:Hasher", "wrong": "cbir_extras.codebook:Codebook"}
    losses = {"failing": "cbir_extras.failing:Loss"}
    install(entry_points={plugins.HASHERS: hashers, plugins.LOSSES: losses}, files={"cbir_extras/failing.py": "raise RuntimeError('no GPU driver')"})
    text = problems(config_with(methods=["missing", "wrong", "failing_head", "pcarr"]))
    hasher, loss = "group cbir.hashers, package cbir-extras", "group cbir.deephash, package cbir-extras"
    assert f"config key 'hashing.methods.0': entry point missing = 'cbir_extras.nowhere:Hasher' ({hasher}) failed to load: ModuleNotFoundError" in text
    assert f"config key 'hashing.methods.1': entry point wrong = 'cbir_extras.codebook:Codebook' ({hasher}) is <class 'cbir_extras.codebook.Codebook'>" in text
    assert "not a subclass of cbir.hashing.base.BaseHasher" in text
    assert f"config key 'hashing.methods.2': entry point failing = 'cbir_extras.failing:Loss' ({loss}) failed to load: RuntimeError: no GPU driver" in text
    assert "hashing.methods.3" not in text


def test_a_fitted_plugin_hasher_round_trips_without_pickle(install, tmp_path):
    from cbir.hashing import load_hasher, make_hasher, save_hasher

    install()
    X = np.random.default_rng(0).normal(size=(200, 20))
    hasher = make_hasher("pcarr", 8, random_state=0).fit(X)
    save_hasher(hasher, tmp_path / "model.npz")
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["method"] == "pcarr" and meta["arrays"] == ["W_", "mean_", "thresholds_"]
    np.testing.assert_array_equal(load_hasher(tmp_path / "model.npz").transform(X), hasher.transform(X))
    assert np.abs(hasher.transform(X).mean(0) - 0.5).max() <= 0.01  # median thresholds: balanced bits


def test_plugin_loss_and_display_names(install):
    import torch

    from cbir.deephash import make_loss
    from cbir.report import method_name

    install()
    loss = make_loss("codebook", 8, 3, seed=1, scale=2.0)
    value, terms = loss(torch.randn(5, 8), torch.eye(3)[[0, 1, 2, 0, 1]])
    assert value.ndim == 0 and set(terms) == {"bce"} and "codes" in loss.state_dict()
    names = [method_name(m) for m in ("pcarr", "codebook", "codebook_head", "itq", "dpsh_head")]
    assert names == ["PCA-RR", "Codebook", "Codebook (head)", "ITQ", "DPSH (head)"]


def test_workflow_trains_evaluates_and_reports_plugins(install, tmp_path, monkeypatch):
    """The default DAG, made small: one seed, one code length, hashing only, short trainings."""
    install()
    config = yaml.safe_load(yaml.safe_dump(BASE))
    config["seeds"] = [0]
    config["datasets"]["digits"]["metric_learning"] = []
    config["backbones"]["smallcnn"]["finetune"]["epochs"] = 3
    codebook = {"scale": 2.0, "finetune": {"epochs": 1}, "head_only": {"epochs": 5}}
    config["hashing"] = {"methods": ["itq", "pcarr", "codebook_head", "codebook"], "bits": [16], "pcarr": {"rotate": True}, "codebook": codebook}
    path = tmp_path / "plugins.yaml"
    path.write_text(yaml.safe_dump(config))
    workdir = tmp_path / "run"
    snakemake(workdir, "--cores", "2", configfile=path)

    from cbir.report import read_results

    results = read_results(workdir / "results/report/default/results.tsv")
    for method in ("pcarr", "codebook_head", "codebook"):
        rows = results[(results["method"] == method) & (results["bits"] == 16)]
        assert set(rows["ground_truth"]) >= {"labels", "neighbours"}, method
        assert rows.loc[rows["metric"] == "map", "mean"].between(10, 100).all(), method
    meta = json.loads((workdir / "results/digits/seed0/hashing/smallcnn/pcarr/16/model.json").read_text())
    assert meta["method"] == "pcarr" and meta["params"]["rotate"] is True
    report = workdir / "results/report/default"
    for table in ("table2_hashing_methods.md", "table_retrieval_time.md"):
        text = (report / table).read_text()
        assert all(name in text for name in ("PCA-RR", "Codebook (head)", "| Codebook |")), table
    table2 = pd.read_csv(report / "table2_hashing_methods.tsv", sep="\t", comment="#")
    assert set(table2.loc[table2["method"] == "pcarr", "ground_truth"]) == {"labels", "neighbours"}
    assert (report / "fig6_precision_recall.png").stat().st_size > 0 and (report / "explorer_digits.html").stat().st_size > 0

    # `cbir search` encodes a new image as the pipeline encoded it, for each kind of plug-in
    from cbir.io import read_descriptors
    from cbir.query import SearchEngine
    from cbir.search import pairwise_hamming
    from PIL import Image

    monkeypatch.chdir(workdir)
    image_id = pd.read_parquet("results/digits/seed0/splits/digits.parquet")["image_id"].iloc[0]
    index = pd.read_parquet("resources/datasets/digits/manifest.parquet").set_index("image_id").loc[image_id, "index"]
    image = Image.fromarray(np.load("resources/datasets/digits/pixels.npy")[index][..., 0])
    for method in ("pcarr", "codebook_head", "codebook"):
        descriptor = f"hashing/smallcnn/{method}/16"
        ours = SearchEngine(validate_config(config), "digits", descriptor).embed([image])
        codes = read_descriptors(f"results/digits/seed0/{descriptor}/descriptors.parquet")
        # one bit may flip where a projection is within float rounding of its threshold
        assert pairwise_hamming(ours, codes.values[codes.image_id == image_id], 16)[0, 0] <= 1, method
