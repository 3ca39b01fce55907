"""SSDH: the loss terms, codes, and both variants' stages on tiny data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from cbir.codes import unpack_bits
from cbir.io import read_descriptors, write_descriptors, write_parquet
from cbir.ssdh import binary_codes, fit_ssdh_head, head_activations, load_ssdh, load_ssdh_head, ssdh_loss, train_ssdh, train_ssdh_head
from cbir.training import ImageTensors, run_layers

HEAD_OPTIONS = {"epochs": 30, "batch_size": 64, "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "alpha": 0.5, "beta": 2.0}


def test_loss_terms_on_a_hand_made_batch():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 1])
    cross_entropy = math.log(1 + math.exp(-2))
    a = torch.tensor([[0.7, 0.2], [0.3, 0.6]], requires_grad=True)
    loss, terms = ssdh_loss(logits, labels, a, alpha=2.0, beta=10.0)
    # binarization: -mean of (0.2², 0.3², 0.2², 0.1²); balance: unit means 0.5 and 0.4 -> mean of (0², 0.1²)
    assert terms["classification"].item() == pytest.approx(cross_entropy)
    assert terms["binarization"].item() == pytest.approx(-0.045)
    assert terms["balance"].item() == pytest.approx(0.005)
    assert loss.item() == pytest.approx(cross_entropy - 2.0 * 0.045 + 10.0 * 0.005)
    # Descending the binarization term moves every activation away from 0.5.
    terms["binarization"].backward()
    assert (torch.sign(-a.grad) == torch.sign(a.detach() - 0.5)).all()
    # Balance looks at each unit over the batch, not at each image over its units.
    _, balanced = ssdh_loss(logits, labels, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), 1.0, 1.0)
    _, one_sided = ssdh_loss(logits, labels, torch.tensor([[1.0, 0.0], [1.0, 0.0]]), 1.0, 1.0)
    assert balanced["balance"].item() == 0 and one_sided["balance"].item() == pytest.approx(0.25)
    assert balanced["binarization"].item() == one_sided["binarization"].item() == pytest.approx(-0.25)


def clusters(n=512, dim=24, n_classes=4, seed=0):
    """Features of four Gaussian classes, non-negative and of uneven scale like CNN features."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    centres = rng.normal(0, 3, (n_classes, dim))
    features = np.maximum(centres[labels] + rng.normal(0, 1, (n, dim)), 0) * rng.uniform(0.1, 10, dim)
    return features.astype(np.float32), labels


def test_head_codes_are_binary_and_balanced_and_training_lowers_the_loss():
    features, labels = clusters()
    head, history = fit_ssdh_head(features, labels, n_bits=16, n_classes=4, options=HEAD_OPTIONS, seed=0)
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert history["train_accuracy"].iloc[-1] > 0.95
    activations = head_activations(head, features)
    bits = unpack_bits(binary_codes(activations), 16)
    assert set(np.unique(bits)) <= {0, 1}
    assert 0.35 < bits.mean() < 0.65  # about half the bits set over the dataset
    assert np.abs(activations - 0.5).mean() > 0.3  # pushed towards 0 and 1
    # Same class, mostly the same code; other classes, codes far apart.
    same = [np.mean(bits[labels == c] != bits[labels == c][0]) for c in range(4)]
    assert max(same) < 0.1


def test_head_only_stage_writes_model_codes_and_history(tmp_path):
    features, labels = clusters(n=300)
    roles = np.arange(300) % 3
    index = pd.DataFrame({"image_id": [f"i{i}" for i in range(300)][::-1], "label": labels, "train": roles == 0, "database": roles == 1, "query": roles == 2})
    write_descriptors(tmp_path / "features.parquet", index, features)
    cfg = {"alpha": 0.5, "beta": 2.0, "head_only": {**{k: HEAD_OPTIONS[k] for k in ("epochs", "batch_size", "lr", "momentum", "weight_decay")}, "device": "cpu"}}
    history = train_ssdh_head(tmp_path / "features.parquet", cfg, 0, 12, tmp_path / "head.pt", tmp_path / "codes.parquet", tmp_path / "history.parquet")
    assert len(history) == HEAD_OPTIONS["epochs"] and {"train_binarization", "train_balance"} <= set(history.columns)
    codes = read_descriptors(tmp_path / "codes.parquet")
    assert codes.n_bits == 12 and codes.values.shape == (300, 2)
    assert list(codes.image_id) == list(index["image_id"]) and (codes.query == index["query"]).all()
    # The saved head takes raw features and reproduces the codes.
    np.testing.assert_array_equal(binary_codes(head_activations(load_ssdh_head(tmp_path / "head.pt"), features)), codes.values)
    assert pd.read_parquet(tmp_path / "history.parquet")["epoch"].tolist() == list(range(1, HEAD_OPTIONS["epochs"] + 1))


def tiny_split(tmp_path, n=96, size=12):
    """A two-class pixel dataset (manifest, split) in ``tmp_path``; returns the split's images."""
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2
    pixels = (rng.integers(0, 100, (n, size, size, 1)) + (labels * 120)[:, None, None, None]).astype(np.uint8)
    np.save(tmp_path / "pixels.npy", pixels)
    ids = [f"train/{i:05d}" for i in range(n)]
    manifest = pd.DataFrame({"image_id": ids, "label": labels, "class_name": labels.astype(str), "split": "train", "path": str(tmp_path / "pixels.npy"), "index": np.arange(n)})
    write_parquet(manifest, tmp_path / "manifest.parquet")
    order = rng.permutation(n)
    split = pd.DataFrame({"image_id": np.array(ids)[order], "label": labels[order], "train": order < 64, "database": order < 80, "query": order >= 80})
    write_parquet(split, tmp_path / "split.parquet")
    return split.merge(manifest[["image_id", "path", "index"]], on="image_id")


def backbone_config(size=12, epochs=3):
    finetune_options = {"epochs": epochs, "batch_size": 16, "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4, "schedule": "cosine", "lr_step_epochs": 5, "lr_gamma": 0.1, "augment": True, "head_only": False, "validation_fraction": 0.0, "device": "cpu", "workers": 0}
    return {"arch": "smallcnn", "weights": "none", "input_size": size, "finetune": finetune_options}


def ssdh_outputs(tmp_path, bits):
    return {b: {name: tmp_path / f"{b}" / file for name, file in (("model", "ssdh.pt"), ("codes", "codes.parquet"), ("history", "history.parquet"))} for b in bits}


def test_end_to_end_stage_trains_backbone_latent_and_classifier(tmp_path):
    images = tiny_split(tmp_path)
    outputs = ssdh_outputs(tmp_path, [8])
    history = train_ssdh(tmp_path / "manifest.parquet", tmp_path / "split.parquet", backbone_config(), {"alpha": 0.1, "beta": 1.0, "finetune": {"lr": 0.02}}, "digits", 0, outputs)
    assert history["epoch"].tolist() == [1, 2, 3] and {"train_classification", "train_binarization", "train_balance"} <= set(history.columns)
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert history["lr"].iloc[0] < 0.02  # the SSDH recipe overrides the backbone's
    codes = read_descriptors(outputs[8]["codes"])
    assert codes.n_bits == 8 and list(codes.image_id) == list(images["image_id"])
    assert not list(tmp_path.rglob("*.resume"))
    # The saved network is loadable (weights_only) and gives the codes that were written.
    latent = run_layers(load_ssdh(outputs[8]["model"]), ImageTensors(images, "L", 12), ("latent",))["latent"]
    np.testing.assert_array_equal(binary_codes(latent), codes.values)


def test_code_lengths_trained_together_share_the_trunk_and_load_alone(tmp_path):
    images = tiny_split(tmp_path)
    outputs = ssdh_outputs(tmp_path, [8, 4])
    history = train_ssdh(tmp_path / "manifest.parquet", tmp_path / "split.parquet", backbone_config(epochs=2), {"alpha": 0.1, "beta": 1.0}, "digits", 0, outputs)
    assert {"train_classification_4", "train_classification_8", "train_accuracy_8"} <= set(history.columns)
    # Each length's history holds its own terms under the usual names.
    own = pd.read_parquet(outputs[8]["history"])
    np.testing.assert_allclose(own["train_classification"], history["train_classification_8"])
    assert not any(c.endswith("_4") for c in own.columns)
    trunks = []
    for b in (4, 8):
        codes = read_descriptors(outputs[b]["codes"])
        net = load_ssdh(outputs[b]["model"])
        assert codes.n_bits == b and net.bits == (b,)
        np.testing.assert_array_equal(binary_codes(run_layers(net, ImageTensors(images, "L", 12), ("latent",))["latent"]), codes.values)
        trunks.append(net.backbone.state_dict())
    assert all(torch.equal(trunks[0][key], trunks[1][key]) for key in trunks[0])


def test_joint_heads_learn_from_their_own_loss_and_the_trunk_from_their_mean():
    """With the summed loss, a head's gradient is its own loss's; the trunk's is the mean of
    what each head alone would give it."""
    from cbir.models import build_backbone
    from cbir.ssdh import SSDHNet, SSDHObjective

    torch.manual_seed(0)
    x, labels = torch.randn(8, 1, 12, 12), torch.arange(8) % 2
    joint = SSDHNet(build_backbone("smallcnn", "none", in_channels=1, n_classes=2), [4, 8], 2).train()
    objective = SSDHObjective(0.1, 1.0)
    joint.backbone.eval()  # batch-norm statistics frozen: the passes below see the same trunk
    objective(joint, x, labels)[0].backward()
    trunk = {name: p.grad.clone() for name, p in joint.backbone.named_parameters() if p.grad is not None}
    alone = []
    for b in (4, 8):
        single = joint.single(b)
        single.zero_grad()
        objective(single, x, labels)[0].backward()
        alone.append({name: p.grad.clone() for name, p in single.backbone.named_parameters() if p.grad is not None})
        head_grad = single.heads[str(b)].latent.weight.grad.clone()
        joint.zero_grad()
        objective(joint, x, labels)[0].backward()
        torch.testing.assert_close(joint.heads[str(b)].latent.weight.grad, head_grad)
    for name, grad in trunk.items():
        torch.testing.assert_close(grad, (alone[0][name] + alone[1][name]) / 2)
