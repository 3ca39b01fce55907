"""Sharded feature extraction: one job per shard of a dataset's images, gathered into a Parquet
dataset that every later stage reads like a descriptor file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
import yaml

from cbir.features import shard_bounds
from cbir.io import read_descriptors, write_descriptor_dataset, write_descriptors, write_feature_shard
from conftest import REPO, save_image
from workflow import jobs_run, snakemake


def split_index(ids, seed=0):
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ids))
    return pd.DataFrame(
        {"image_id": np.asarray(ids)[order], "label": order % 3, "train": order % 2 == 0, "database": order % 2 == 0, "query": order % 2 == 1}
    )


def test_shards_are_consecutive_runs_that_cover_every_image():
    assert shard_bounds(12, 5) == [(0, 5), (5, 10), (10, 12)]
    assert shard_bounds(10, 5) == [(0, 5), (5, 10)]
    assert shard_bounds(3, 100) == [(0, 3)]


def test_a_descriptor_dataset_reads_as_the_file_of_the_same_rows(tmp_path):
    ids = [f"img{i:02d}" for i in range(11)]
    features = np.random.default_rng(1).standard_normal((11, 4)).astype(np.float32)
    shards = []
    for k, (start, stop) in enumerate(shard_bounds(11, 4)):
        shards.append(tmp_path / f"shard{k}.parquet")
        write_feature_shard(shards[-1], ids[start:stop], np.zeros(stop - start), features[start:stop])
    index = split_index(ids)[:9]  # a split needs not hold every image of the dataset
    write_descriptor_dataset(tmp_path / "features.parquet", index, shards)
    write_descriptors(tmp_path / "file.parquet", index, features[[ids.index(i) for i in index["image_id"]]])

    gathered, whole = read_descriptors(tmp_path / "features.parquet"), read_descriptors(tmp_path / "file.parquet")
    np.testing.assert_array_equal(gathered.values, whole.values)
    for column in ("image_id", "label", "train", "database", "query"):
        np.testing.assert_array_equal(getattr(gathered, column), getattr(whole, column))
    # The folder is a Parquet dataset: pyarrow reads its parts as one table.
    assert ds.dataset(tmp_path / "features.parquet", format="parquet").count_rows() == 11


def dataset_and_file(tmp_path, n=30, dim=6):
    ids = [f"img{i:02d}" for i in range(n)]
    features = np.random.default_rng(2).standard_normal((n, dim)).astype(np.float32)
    shards = []
    for k, (start, stop) in enumerate(shard_bounds(n, 7)):
        shards.append(tmp_path / f"shard{k}.parquet")
        write_feature_shard(shards[-1], ids[start:stop], np.arange(start, stop) % 3, features[start:stop])
    index = split_index(ids)
    write_descriptor_dataset(tmp_path / "features.parquet", index, shards)
    write_descriptors(tmp_path / "file.parquet", index, features[[ids.index(i) for i in index["image_id"]]])
    return tmp_path / "features.parquet", tmp_path / "file.parquet"


def test_chunks_and_selected_rows_cover_the_file_in_its_order(tmp_path):
    from cbir.io import descriptor_chunks, read_descriptor_rows

    for path in dataset_and_file(tmp_path):
        whole = read_descriptors(path).values
        seen = np.zeros(len(whole), int)
        for positions, values in descriptor_chunks(path, chunk_rows=4):
            seen[positions] += 1
            np.testing.assert_array_equal(values, whole[positions])
        assert (seen == 1).all()
        rows = np.array([17, 3, 25, 4])
        np.testing.assert_array_equal(read_descriptor_rows(path, rows), whole[rows])


def test_hashing_a_dataset_gives_the_codes_of_the_file(tmp_path):
    from cbir.hashing.stage import train_hash

    codes = []
    for name, path in zip(("dataset", "file"), dataset_and_file(tmp_path)):
        out = tmp_path / name
        train_hash(path, "itq", 4, params={}, seed=0, train_sample=12, model_path=out / "m.npz", codes_path=out / "codes.parquet", trace_path=out / "t.tsv")
        codes.append(read_descriptors(out / "codes.parquet"))
    np.testing.assert_array_equal(codes[0].values, codes[1].values)
    np.testing.assert_array_equal(codes[0].image_id, codes[1].image_id)


def test_an_image_no_shard_holds_is_named(tmp_path):
    write_feature_shard(tmp_path / "s.parquet", ["a", "b"], [0, 1], np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"no shard .* holds the features of \['c'\]"):
        write_descriptor_dataset(tmp_path / "f.parquet", split_index(["a", "b", "c"]), [tmp_path / "s.parquet"])
    assert not (tmp_path / "f.parquet").exists()
    with pytest.raises(FileNotFoundError, match="missing feature shard: .*gone.parquet"):
        write_descriptor_dataset(tmp_path / "f.parquet", split_index(["a"]), [tmp_path / "gone.parquet"])


def test_a_missing_part_is_named(tmp_path):
    write_feature_shard(tmp_path / "s.parquet", ["a", "b"], [0, 1], np.ones((2, 3)))
    write_descriptor_dataset(tmp_path / "f.parquet", split_index(["a", "b"]), [tmp_path / "s.parquet"])
    (tmp_path / "f.parquet" / "part-00000.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="part-00000.parquet"):
        read_descriptors(tmp_path / "f.parquet")


# --------------------------------------------------------------------------------------------
# The DAG: a tiny image folder in 3 shards against the same folder extracted whole
# --------------------------------------------------------------------------------------------

BASE = yaml.safe_load((REPO / "config.yaml").read_text())
SHARD = "results/photos/seed0/features/smallcnn/{stage}/penultimate.shards/{shard:05d}.parquet"


def folder_config(tmp_path, shard_size):
    backbone = yaml.safe_load(yaml.safe_dump(BASE["backbones"]["smallcnn"]))
    backbone["finetune"].update(epochs=1, batch_size=4)
    config = {
        "seeds": [0],
        "report_dir": "results/report/photos",
        "datasets": {"photos": {"kind": "imagefolder", "root": str(tmp_path / "photos"), "protocol": "p", "hashing": ["smallcnn"], "metric_learning": ["smallcnn"], "shard_size": shard_size}},
        "protocols": {"p": {"kind": "per_class", "database_per_class": 10, "query_per_class": 2, "train_per_class": "database"}},
        "backbones": {"smallcnn": backbone},
        "hashing": {"methods": ["itq"], "bits": [4]},
        "metric_learning": {"epochs": 1, "models": ["PT", "FT"]},
    }
    path = tmp_path / f"shards{shard_size}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def folder_runs(tmp_path_factory):
    """The same 30 photos (2 classes), extracted in shards of 10 (3 shards) and whole. Enough
    training images (20) for 4 well-determined principal directions: the features of the two
    runs differ in their last bits, and a direction the data do not determine would follow them."""
    tmp_path = tmp_path_factory.mktemp("shards")
    for k, name in enumerate(("cats", "dogs")):
        for i in range(15):
            save_image(tmp_path / "photos" / name / f"{i:02d}.png", "RGB", seed=100 * k + i)
    runs = {}
    for shard_size in (10, None):
        workdir = tmp_path / f"run{shard_size}"
        workdir.mkdir()
        result = snakemake(workdir, "--cores", "2", configfile=folder_config(tmp_path, shard_size))
        runs[shard_size] = (workdir, jobs_run(result.stdout + result.stderr))
    return tmp_path, runs


def test_sharded_run_equals_the_whole_run(folder_runs):
    _, runs = folder_runs
    (sharded, ran), (whole, _) = runs[10], runs[None]
    assert ran["extract_feature_shard"] == 2 * 3 and ran["gather_features"] == 2 and "extract_features" not in ran
    run = "results/photos/seed0"
    for stage in ("finetuned", "pretrained"):
        a, b = (read_descriptors(w / run / f"features/smallcnn/{stage}/penultimate.parquet") for w in (sharded, whole))
        assert (sharded / run / f"features/smallcnn/{stage}/penultimate.parquet").is_dir()
        np.testing.assert_array_equal(a.image_id, b.image_id)
        np.testing.assert_array_equal(a.query, b.query)
        # Other batches (10 images in each instead of all 30) may round the last bit differently.
        np.testing.assert_allclose(a.values, b.values, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(*(read_descriptors(w / run / "hashing/smallcnn/itq/4/descriptors.parquet").values for w in (sharded, whole)))
    summaries = sorted(p.relative_to(whole) for p in whole.glob(f"{run}/evaluation/**/summary.parquet"))
    assert len(summaries) == 2 + 2  # features and ITQ; PT and FT
    for path in summaries:
        pd.testing.assert_frame_equal(pd.read_parquet(sharded / path), pd.read_parquet(whole / path), check_exact=False, rtol=1e-6)


def test_added_images_add_a_shard_and_rerun_nothing_else_of_fixed_weights(folder_runs):
    """Photos named after the others go to a new last shard (or the last one, while it has room):
    of the features from fixed weights only that shard is extracted; the fine-tuned network
    trains again on the new split, so its features are extracted again in every shard."""
    tmp_path, runs = folder_runs
    workdir = runs[10][0]
    shards = {(stage, k): workdir / SHARD.format(stage=stage, shard=k) for stage in ("pretrained", "finetuned") for k in range(3)}
    before = {key: path.stat().st_mtime_ns for key, path in shards.items()}
    save_image(tmp_path / "photos" / "dogs" / "z.png", "RGB", seed=99)

    result = snakemake(workdir, "--cores", "2", configfile=folder_config(tmp_path, 10))
    ran = jobs_run(result.stdout + result.stderr)
    rewritten = {key for key, path in shards.items() if path.stat().st_mtime_ns != before[key]}
    assert rewritten == {("finetuned", 0), ("finetuned", 1), ("finetuned", 2)}
    assert ran["extract_feature_shard"] == 1 + 4 and ran["gather_features"] == 2  # the new shard; every fine-tuned one
    new_shard = workdir / SHARD.format(stage="pretrained", shard=3)
    assert pd.read_parquet(new_shard, columns=["image_id"])["image_id"].tolist() == ["dogs/z.png"]
