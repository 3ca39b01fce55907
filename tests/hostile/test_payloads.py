"""No file that cbir reads can run code: each carries a payload that would create a marker file."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from cbir.datasets import prepare_dataset
from cbir.restricted_pickle import load_plain_pickle

from conftest import make_cifar10


class Payload:
    """Unpickling this creates ``marker``: the code a crafted file would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("name", ["data_batch_1", "test_batch", "batches.meta"])
def test_cifar_batch_with_a_payload_is_refused_naming_it(tmp_path, name):
    root = make_cifar10(tmp_path / "cifar")
    marker = tmp_path / "payload-ran"
    batch = root / "cifar-10-batches-py" / name
    batch.write_bytes(pickle.dumps({"data": Payload(marker), "labels": [0], "label_names": [Payload(marker)]}))
    with pytest.raises(ValueError, match=rf"{name}.*pathlib.*refusing"):
        prepare_dataset("cifar10", tmp_path / "out" / "manifest.parquet", root=str(root))
    assert not marker.exists()
    assert not (tmp_path / "out" / "manifest.parquet").exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batches_of_every_pickle_protocol_are_read(tmp_path, protocol):
    """Python 2's protocol 2 (the original files), and what numpy writes under protocols 4 and 5."""
    data = {"data": np.arange(12, dtype=np.uint8).reshape(2, 6), "labels": [3, np.int64(4)], "batch_label": b"x"}
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    loaded = load_plain_pickle(path)
    np.testing.assert_array_equal(loaded["data"], data["data"])
    assert [int(v) for v in loaded["labels"]] == [3, 4]


def test_an_array_of_python_objects_is_refused(tmp_path):
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({"data": np.array([1, "a"], dtype=object)}))
    with pytest.raises(ValueError, match="dtype object"):
        load_plain_pickle(path)


def test_weights_file_with_a_payload_is_refused(tmp_path):
    from cbir.models import build_backbone

    marker = tmp_path / "payload-ran"
    weights = tmp_path / "model.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": Payload(marker)}, weights)
    with pytest.raises(ValueError, match="model.pt"):
        build_backbone("smallcnn", str(weights), in_channels=1)
    assert not marker.exists()


@pytest.mark.parametrize("loader", ["load_network", "load_head"])
def test_deep_hashing_model_with_a_payload_is_refused(tmp_path, loader):
    from cbir.deephash import core

    marker = tmp_path / "payload-ran"
    path = tmp_path / "model.pt"
    torch.save({"arch": "smallcnn", "extra": Payload(marker)}, path)
    with pytest.raises(ValueError, match="model.pt"):
        getattr(core, loader)(path)
    assert not marker.exists()


def test_hash_model_with_a_payload_is_refused(tmp_path):
    from cbir.hashing import ITQ, load_hasher, save_hasher

    model = tmp_path / "model.npz"
    save_hasher(ITQ(8, random_state=0).fit(np.random.default_rng(0).normal(size=(50, 16))), model)
    marker = tmp_path / "payload-ran"
    model.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ValueError, match="model.npz"):
        load_hasher(model)
    assert not marker.exists()


def test_pixel_array_of_python_objects_is_refused(tmp_path):
    from cbir.datasets import ImageReader
    import pandas as pd

    marker = tmp_path / "payload-ran"
    pixels = tmp_path / "pixels.npy"
    np.save(pixels, np.array([Payload(marker)], dtype=object), allow_pickle=True)
    reader = ImageReader(pd.DataFrame({"path": [str(pixels)], "index": [0]}), "L")
    with pytest.raises(ValueError, match="pixels.npy"):
        reader[0]
    assert not marker.exists()


def test_resume_checkpoint_with_a_payload_is_ignored(tmp_path):
    """A fine-tuning's resume file is its own output; a tampered one is not loaded, the run starts afresh."""
    import pandas as pd

    from cbir.models import build_backbone
    from cbir.training import ImageTensors, finetune

    marker = tmp_path / "payload-ran"
    resume = tmp_path / "model.pt.resume"
    torch.save({"run_id": "x", "extra": Payload(marker)}, resume)
    pixels = tmp_path / "pixels.npy"
    np.save(pixels, np.random.default_rng(0).integers(0, 255, (8, 8, 8, 1), dtype=np.uint8))
    images = pd.DataFrame({"path": str(pixels), "index": np.arange(8), "label": np.arange(8) % 2})
    options = {"epochs": 1, "batch_size": 4, "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0, "schedule": "cosine", "augment": False, "head_only": False, "device": "cpu", "workers": 0}
    history = finetune(build_backbone("smallcnn", "none", in_channels=1, n_classes=2), ImageTensors(images, "L", 8), None, options, False, 0, resume, "x")
    assert len(history) == 1
    assert not marker.exists()
