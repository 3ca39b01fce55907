"""Multi-label data: the ``multilabel`` dataset kind (a labels table), label sets through splits
and descriptor files, and the evaluation's relevance (a class in common)."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import yaml

from cbir.codes import pack_bits
from cbir.config import ConfigError, validate_config
from cbir.datasets import prepare_dataset, read_manifest
from cbir.evaluation import evaluate
from cbir.io import multi_hot, read_descriptor_index, read_descriptors, write_descriptor_dataset, write_descriptors, write_feature_shard
from cbir.splits import sample_split

from conftest import REPO, save_image
from workflow import snakemake

CLASSES = ("cat", "dog", "person", "sky")


def names_of(i: int) -> list[str]:
    """Image i's classes, first class i % 4 (9 images each of 36): every image has one to three."""
    return [CLASSES[(i + j) % 4] for j in range(1 + i % 3)]


def make_multilabel(root, n: int = 36):
    for i in range(n):
        save_image(root / "img" / f"{i:03d}.png", "RGB", size=(10, 8), seed=i)
    rows = [f"img/{i:03d}.png,{';'.join(names_of(i))}" for i in range(n)]
    (root / "labels.csv").write_text("file,labels\n" + "\n".join(rows) + "\n")
    return root


def prepare(root, tmp_path):
    return prepare_dataset("multilabel", tmp_path / "out" / "manifest.parquet", root=str(root), labels=str(root / "labels.csv"))


def test_manifest_lists_the_table_with_first_label_and_label_sets(tmp_path):
    root = make_multilabel(tmp_path / "ml")
    prepare(root, tmp_path)
    manifest = read_manifest(tmp_path / "out" / "manifest.parquet")
    assert manifest["image_id"].tolist() == [f"img/{i:03d}.png" for i in range(36)]
    assert manifest["path"].tolist() == [str(root / "img" / f"{i:03d}.png") for i in range(36)]
    assert manifest["class_name"].tolist() == [names_of(i)[0] for i in range(36)]
    assert manifest["label"].tolist() == [CLASSES.index(names_of(i)[0]) for i in range(36)]  # classes are sorted: cat dog person sky
    assert [list(s) for s in manifest["labels"]] == [sorted(CLASSES.index(c) for c in names_of(i)) for i in range(36)]
    assert (manifest["split"] == "train").all() and (manifest["index"] == -1).all()


def test_first_label_listed_is_the_label_and_class_names_are_trimmed(tmp_path):
    root = tmp_path / "ml"
    save_image(root / "a.png", "RGB")
    save_image(root / "b c.png", "L", seed=1)
    (root / "labels.csv").write_text('\ufefffile , labels,source\r\na.png,"zebra ; ant;zebra",x\r\n\r\nb c.png,ant,y\r\n')
    manifest = prepare(root, tmp_path)
    assert manifest["label"].tolist() == [1, 0] and manifest["class_name"].tolist() == ["zebra", "ant"]
    assert [list(s) for s in manifest["labels"]] == [[0, 1], [0]]


@pytest.mark.parametrize(
    "rows, line, message",
    [
        ("path,labels\nimg/000.png,cat\n", 1, "header must name the columns `file` and `labels`"),
        ("file,labels\nimg/000.png,cat,dog\n", 2, "3 fields, the header has 2"),
        ("file,labels\nimg/000.png,cat\nimg/001.png\n", 3, "1 fields, the header has 2"),
        ("file,labels\nimg/000.png,cat\nimg/nope.png,cat\n", 3, "no image file .*img/nope.png"),
        ("file,labels\nimg/000.png,\n", 2, "an empty class name"),
        ("file,labels\nimg/000.png,cat;;dog\n", 2, "an empty class name"),
        ("file,labels\n../ml/img/000.png,cat\n", 2, "not a path inside the dataset root"),
        ("file,labels\n/etc/hostname,cat\n", 2, "not a path inside the dataset root"),
        ("file,labels\nimg/000.png,cat\n\n./img/000.png,dog\n", 4, r"img/000.png is listed twice \(first on line 2\)"),
        ('file,labels\nimg/000.png,"cat\n', 2, "unexpected end of data"),  # the line where the quoted field starts
        ('file,labels\nimg/000.png,"cat"s\n', 2, "',' expected after '\"'"),
    ],
)
def test_bad_rows_are_named_with_file_and_line(tmp_path, rows, line, message):
    root = make_multilabel(tmp_path / "ml", n=2)
    (root / "labels.csv").write_text(rows)
    with pytest.raises(ValueError, match=rf"labels.csv, line {line}: .*{message}"):
        prepare(root, tmp_path)
    assert not (tmp_path / "out" / "manifest.parquet").exists()


def test_bytes_that_are_not_utf8_name_their_line_and_an_empty_table_is_refused(tmp_path):
    root = make_multilabel(tmp_path / "ml", n=2)
    (root / "labels.csv").write_bytes(b"file,labels\nimg/000.png,cat\nimg/001.png,caf\xe9\n")
    with pytest.raises(ValueError, match="labels.csv, line 3: not UTF-8"):
        prepare(root, tmp_path)
    (root / "labels.csv").write_text("file,labels\n")
    with pytest.raises(ValueError, match="labels.csv: lists no images"):
        prepare(root, tmp_path)


def test_undecodable_image_is_named(tmp_path):
    root = make_multilabel(tmp_path / "ml", n=4)
    (root / "img" / "002.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ValueError, match="1 unreadable image file.*img/002.png"):
        prepare(root, tmp_path)


def test_config_needs_the_labels_table_of_a_multilabel_dataset_only(tmp_path):
    root = make_multilabel(tmp_path / "ml", n=2)
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    base["datasets"] = {"ml": {"kind": "multilabel", "root": str(root), "labels": "labels.csv", "protocol": "digits", "hashing": ["smallcnn"]}}
    base["hashing"]["methods"] = ["itq", "cca_itq", "ssdh_head"]
    assert validate_config(base)["datasets"]["ml"]["labels"] == "labels.csv"
    end_to_end = copy.deepcopy(base)
    end_to_end["hashing"]["methods"].append("dpsh")  # the fine-tuning loop carries one label per image
    with pytest.raises(ConfigError, match="'hashing.methods': dpsh train end to end.*dpsh_head"):
        validate_config(end_to_end)
    for change, message in (
        ({"labels": None}, "'datasets.ml.labels': a multilabel dataset needs its labels table"),
        ({"labels": "nope.csv"}, "'datasets.ml.labels': no file .*nope.csv"),
        ({"kind": "imagefolder"}, "'datasets.ml.labels': only a multilabel dataset has a labels table"),
        ({"root": None}, "'datasets.ml.root': a dataset of kind multilabel needs the folder to index"),
    ):
        config = copy.deepcopy(base)
        config["datasets"]["ml"].update(change)
        with pytest.raises(ConfigError, match=message):
            validate_config(config)


# --------------------------------------------------------------------------------------------
# Label sets through splits and descriptor files
# --------------------------------------------------------------------------------------------


def test_label_sets_travel_through_split_and_descriptor_files(tmp_path):
    manifest = prepare(make_multilabel(tmp_path / "ml"), tmp_path)
    split = sample_split(manifest, {"kind": "per_class", "query_per_class": 2, "database_per_class": 6, "train_per_class": "database"}, seed=0)
    assert split["query"].sum() == 8 and split["database"].sum() == 24  # per first label: 9 images of each class
    truth = dict(zip(manifest["image_id"], map(list, manifest["labels"])))
    assert all(list(s) == truth[i] for i, s in zip(split["image_id"], split["labels"]))

    values = np.arange(len(split) * 3, dtype=np.float32).reshape(-1, 3)
    write_descriptors(tmp_path / "f.parquet", split, values)
    write_feature_shard(tmp_path / "s.parquet", split["image_id"], split["label"], values)
    write_descriptor_dataset(tmp_path / "d.parquet", split, [tmp_path / "s.parquet"])
    for path in (tmp_path / "f.parquet", tmp_path / "d.parquet"):
        descriptors = read_descriptors(path)
        assert descriptors.is_multilabel and [list(s) for s in descriptors.labels] == [truth[i] for i in split["image_id"]]
        assert [list(s) for s in read_descriptor_index(path)["labels"]] == [truth[i] for i in split["image_id"]]
        queries = descriptors.subset("query")
        np.testing.assert_array_equal(queries.targets(), multi_hot(split["label"], split["labels"])[split["query"].to_numpy()])
        # hashing and metric learning write their codes from the features' index: the label sets stay
        write_descriptors(tmp_path / "codes.parquet", descriptors.index_frame(), pack_bits(values > 4), n_bits=3)
        assert [list(s) for s in read_descriptors(tmp_path / "codes.parquet").labels] == [truth[i] for i in split["image_id"]]


def test_targets_are_multi_hot_or_one_hot():
    np.testing.assert_array_equal(multi_hot([2, 0], [[0, 2], [0]]), [[1, 0, 1], [1, 0, 0]])
    np.testing.assert_array_equal(multi_hot([2, 0], None, n_classes=4), [[0, 0, 1, 0], [1, 0, 0, 0]])
    assert multi_hot([1], [np.array([1, 3])], n_classes=5).dtype == np.float32
    with pytest.raises(ValueError, match="class numbers must lie in 0..1"):
        multi_hot([2], None, n_classes=2)


def test_single_label_files_have_no_label_sets(tmp_path):
    index = pd.DataFrame({"image_id": ["a", "b"], "label": [1, 0], "train": True, "database": [True, False], "query": [False, True]})
    write_descriptors(tmp_path / "f.parquet", index, np.eye(2, dtype=np.float32))
    descriptors = read_descriptors(tmp_path / "f.parquet")
    assert not descriptors.is_multilabel and "labels" not in descriptors.index_frame()
    np.testing.assert_array_equal(descriptors.targets(), [[0, 1], [1, 0]])


def test_tampered_label_sets_are_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    index = pd.DataFrame({"image_id": ["a", "b"], "label": [1, 0], "labels": [[1], [0, 1]], "train": True, "database": [True, False], "query": [False, True]})
    write_descriptors(tmp_path / "f.parquet", index, np.eye(2, dtype=np.float32))
    table = pq.read_table(tmp_path / "f.parquet")
    lists = pa.list_(pa.int64())
    for labels in (pa.array([[1], []], lists), pa.array([[1], [-1]], lists), pa.array([[1], None], lists), pa.array(["1", "0;1"])):
        pq.write_table(table.set_column(table.column_names.index("labels"), "labels", labels), tmp_path / "bad.parquet")
        with pytest.raises(ValueError, match="bad.parquet is not a descriptor file"):
            read_descriptors(tmp_path / "bad.parquet")


# --------------------------------------------------------------------------------------------
# Evaluation: relevant = a class in common
# --------------------------------------------------------------------------------------------


def outputs(tmp_path) -> dict:
    return {name: tmp_path / f"{name}.parquet" for name in ("ranking", "timing", "per_query", "summary", "pr")}


def test_sharing_one_label_is_relevant(tmp_path):
    """One query (cat, dog) and four database images at distances 1..4: dog, person, cat+sky, sky.
    Relevant: the first and third; AP@4 = (1/1 + 2/3) / 2, P@1 = 1; by the first label alone
    (cat) only the third would be."""
    index = pd.DataFrame(
        {
            "image_id": ["q", "d1", "d2", "d3", "d4"],
            "label": [0, 1, 2, 0, 3],
            "labels": [[0, 1], [1], [2], [0, 3], [3]],
            "train": False,
            "database": [False, True, True, True, True],
            "query": [True, False, False, False, False],
        }
    )
    write_descriptors(tmp_path / "d.parquet", index, np.array([[0], [1], [2], [3], [4]], np.float32))
    summary = evaluate(tmp_path / "d.parquet", outputs(tmp_path), k=4, n_timed=1)
    ranking = pd.read_parquet(tmp_path / "ranking.parquet")
    assert ranking["image_id"].tolist() == ["d1", "d2", "d3", "d4"] and ranking["relevant"].tolist() == [True, False, True, False]
    row = summary.set_index("ground_truth").loc["labels"]
    assert row["map"] == pytest.approx((1 + 2 / 3) / 2) and row["p@1"] == 1 and row["recall"] == 1
    per_query = pd.read_parquet(tmp_path / "per_query.parquet")
    assert per_query["n_relevant"].tolist() == [2]
    pr = pd.read_parquet(tmp_path / "pr.parquet").query("curve == 'top-k'").set_index("cutoff")
    assert pr.loc[2, "precision"] == 0.5 and pr.loc[2, "recall"] == 0.5


def reference_top_map(distances: np.ndarray, query_targets: np.ndarray, database_targets: np.ndarray, topk: int) -> float:
    """mAP@topk as DeepHash-pytorch's CalcTopMap defines it (relevant: a label in common; AP over
    the relevant items in the top k; queries without any count 0 and stay in the mean), written
    out query by query; ties by database position (a stable sort), as the evaluation breaks them."""
    total = 0.0
    for q in range(len(distances)):
        relevant = [bool((query_targets[q] * database_targets[i]).sum() > 0) for i in np.argsort(distances[q], kind="stable")[:topk]]
        hits, precisions = 0, []
        for rank, is_relevant in enumerate(relevant, start=1):
            if is_relevant:
                hits += 1
                precisions.append(hits / rank)
        total += np.mean(precisions) if precisions else 0.0
    return total / len(distances)


@pytest.mark.parametrize("binary", [True, False])
def test_map_at_k_is_deephash_calc_top_map(tmp_path, binary):
    rng = np.random.default_rng(1)
    n_db, n_q, n_classes, k = 150, 40, 6, 30
    # One to three labels per image, from 6 classes; some queries have none in common with the top k.
    targets = (rng.random((n_db + n_q, n_classes)) < 0.2).astype(np.float32)
    targets[np.arange(len(targets)), rng.integers(0, n_classes, len(targets))] = 1
    labels = [np.flatnonzero(t) for t in targets]
    index = pd.DataFrame({"image_id": [f"i{i}" for i in range(n_db + n_q)], "label": [s[0] for s in labels], "labels": labels, "train": False})
    index["database"] = np.arange(len(index)) < n_db
    index["query"] = ~index["database"]
    features = rng.normal(size=(len(index), 12)) + 0.8 * targets @ rng.normal(size=(n_classes, 12))
    if binary:
        bits = features > 0
        write_descriptors(tmp_path / "d.parquet", index, pack_bits(bits), n_bits=12)
        distances = (bits[n_db:, None, :] != bits[None, :n_db, :]).sum(-1)  # Hamming: many ties
    else:
        write_descriptors(tmp_path / "d.parquet", index, features.astype(np.float32))
        x = features.astype(np.float32).astype(np.float64)
        distances = ((x[n_db:, None, :] - x[None, :n_db, :]) ** 2).sum(-1)
    summary = evaluate(tmp_path / "d.parquet", outputs(tmp_path), k=k, n_timed=1).set_index("ground_truth")
    expected = reference_top_map(distances, targets[n_db:], targets[:n_db], k)
    assert summary.loc["labels", "map"] == pytest.approx(expected, abs=1e-12)
    assert 0.2 < expected < 0.95  # neither trivial nor perfect


# --------------------------------------------------------------------------------------------
# The workflow on a small multi-label set
# --------------------------------------------------------------------------------------------


def test_workflow_evaluates_with_shared_labels(tmp_path, monkeypatch):
    """The dataset, split, fine-tuning, features and ITQ codes of 36 images; the rankings mark a
    hit relevant when it shares a class with the query, and mAP@k follows from them; so does the
    search page."""
    root = make_multilabel(tmp_path / "ml")
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    backbone = base["backbones"]["smallcnn"]
    backbone["finetune"].update(epochs=1, batch_size=8)
    config = {
        "seeds": [0],
        "datasets": {"ml": {"kind": "multilabel", "root": str(root), "labels": "labels.csv", "protocol": "p", "hashing": ["smallcnn"]}},
        "protocols": {"p": {"kind": "per_class", "database_per_class": 6, "query_per_class": 2, "train_per_class": "database"}},
        "backbones": {"smallcnn": backbone},
        "hashing": {"methods": ["itq"], "bits": [4]},
        "evaluation": {"topk": 24},
    }
    (tmp_path / "ml.yaml").write_text(yaml.safe_dump(config))
    run = "results/ml/seed0"
    descriptors = {
        "features/smallcnn/finetuned/penultimate": f"{run}/features/smallcnn/finetuned/penultimate.parquet",
        "hashing/smallcnn/itq/4": f"{run}/hashing/smallcnn/itq/4/descriptors.parquet",
    }
    targets = [f"{run}/evaluation/{name}/summary.parquet" for name in descriptors]
    snakemake(tmp_path, "--cores", "2", *targets, configfile=tmp_path / "ml.yaml")

    truth = {f"img/{i:03d}.png": set(names_of(i)) for i in range(36)}
    for name, path in descriptors.items():
        assert read_descriptors(tmp_path / path).is_multilabel
        ranking = pd.read_parquet(tmp_path / f"{run}/evaluation/{name}/ranking.parquet")
        assert len(ranking) == 8 * 24  # every query ranks the whole database
        np.testing.assert_array_equal(ranking["relevant"], [bool(truth[q] & truth[i]) for q, i in zip(ranking["query_id"], ranking["image_id"])])
        hits = ranking["relevant"].to_numpy().reshape(8, 24)
        precision = np.cumsum(hits, axis=1) / np.arange(1, 25)
        expected = np.mean([(precision[q] * hits[q]).sum() / hits[q].sum() if hits[q].any() else 0 for q in range(8)])
        summary = pd.read_parquet(tmp_path / f"{run}/evaluation/{name}/summary.parquet").set_index("ground_truth")
        assert summary.loc["labels", "map"] == pytest.approx(expected)

    from cbir.query import SearchEngine

    monkeypatch.chdir(tmp_path)
    engine = SearchEngine(validate_config(config), "ml", "features/smallcnn/finetuned/penultimate")
    query = engine.queries.image_id[0]
    table, _ = engine.search_split_query(query, k=24)
    assert table["relevant"].tolist() == [bool(truth[query] & truth[i]) for i in table["image_id"]]


def test_supervised_hashers_learn_the_label_sets(tmp_path):
    """CCA-ITQ in the train_hash stage is fitted on each image's label set (multi-hot), not its
    first label: its codes are those of CCA-ITQ fitted on the multi-hot rows directly."""
    from cbir.hashing import make_hasher
    from cbir.hashing.stage import train_hash
    from cbir.preprocess import apply_preprocessing, fit_preprocessing

    rng = np.random.default_rng(0)
    sets = [sorted(rng.choice(4, size=rng.integers(1, 3), replace=False).tolist()) for _ in range(300)]
    targets = multi_hot([s[0] for s in sets], sets)
    features = (targets @ rng.normal(0, 2, (4, 12)) + rng.normal(0, 0.5, (300, 12))).astype(np.float32)
    index = pd.DataFrame({"image_id": [f"i{i}" for i in range(300)], "label": [s[0] for s in sets], "labels": sets, "train": True, "database": True, "query": False})
    write_descriptors(tmp_path / "features.parquet", index, features)
    train_hash(tmp_path / "features.parquet", "cca_itq", 6, params={}, seed=0, model_path=tmp_path / "m.npz", codes_path=tmp_path / "codes.parquet", trace_path=tmp_path / "trace.tsv")
    preprocessing = fit_preprocessing("l2", features)
    direct = make_hasher("cca_itq", 6, random_state=0).fit(apply_preprocessing(preprocessing, features), targets)
    np.testing.assert_array_equal(read_descriptors(tmp_path / "codes.parquet").values, direct.encode(apply_preprocessing(preprocessing, features)))
