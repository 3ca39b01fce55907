"""Deep hashing's shared core: the head-only and end-to-end stages, for every method, on tiny data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cbir.codes import unpack_bits
from cbir.deephash import LOSSES, make_loss
from cbir.deephash.core import DeepHashNet, DeepHashObjective, codes_of, fit_heads, head_outputs, load_head, load_network, train_end_to_end, train_head
from cbir.io import read_descriptors, write_descriptors, write_parquet
from cbir.report import read_results
from cbir.training import ImageTensors, run_layers

HEAD_OPTIONS = {"epochs": 30, "batch_size": 64, "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}
SSDH = {"alpha": 0.5, "beta": 2.0}


def clusters(n=512, dim=24, n_classes=4, seed=0):
    """Features of four Gaussian classes, non-negative and of uneven scale like CNN features."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    centres = rng.normal(0, 3, (n_classes, dim))
    features = np.maximum(centres[labels] + rng.normal(0, 1, (n, dim)), 0) * rng.uniform(0.1, 10, dim)
    return features.astype(np.float32), labels


@pytest.mark.parametrize("method", sorted(LOSSES))
def test_every_method_learns_codes_that_keep_the_classes_apart(method):
    features, labels = clusters()
    loss = make_loss(method, 16, 4, seed=0, **(SSDH if method == "ssdh" else {}))
    [(head, history)] = fit_heads(features, np.eye(4, dtype=np.float32)[labels], [loss], HEAD_OPTIONS, seed=0)
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    bits = unpack_bits(codes_of(head_outputs(head, features)), 16)
    assert 0.2 < bits.mean() < 0.8  # no constant bits over the whole dataset
    # Same class, mostly the same code; other classes, codes far apart.
    within = max(np.mean(bits[labels == c] != bits[labels == c][0]) for c in range(4))
    centres = np.array([bits[labels == c].mean(0) > 0.5 for c in range(4)])
    between = min(np.mean(centres[a] != centres[b]) for a in range(4) for b in range(a + 1, 4))
    assert within < 0.1 and between > 0.2, (within, between)


def test_ssdh_pushes_activations_to_0_and_1_and_scores_classes():
    features, labels = clusters()
    [(head, history)] = fit_heads(features, np.eye(4, dtype=np.float32)[labels], [make_loss("ssdh", 16, 4, **SSDH)], HEAD_OPTIONS, seed=0)
    assert history["train_accuracy"].iloc[-1] > 0.95 and {"train_binarization", "train_balance"} <= set(history.columns)
    activations = torch.sigmoid(torch.from_numpy(head_outputs(head, features))).numpy()
    assert np.abs(activations - 0.5).mean() > 0.3


@pytest.mark.parametrize("method", ["greedyhash", "hashnet", "ssdh"])
def test_heads_trained_in_lock_step_are_those_trained_alone(method):
    """Several code lengths share the batches and the SGD steps, yet each head ends exactly
    where it would alone: the lengths' codes do not depend on which others were trained."""
    features, labels = clusters(n=256)
    targets = np.eye(4, dtype=np.float32)[labels]

    def loss(n_bits):
        torch.manual_seed(0)
        return make_loss(method, n_bits, 4, seed=0, **(SSDH if method == "ssdh" else {}))

    together = fit_heads(features, targets, [loss(8), loss(24)], HEAD_OPTIONS, seed=0)
    for (head, history), n_bits in zip(together, (8, 24)):
        [(alone, alone_history)] = fit_heads(features, targets, [loss(n_bits)], HEAD_OPTIONS, seed=0)
        for name, value in alone.state_dict().items():
            assert torch.equal(head.state_dict()[name], value), name
        pd.testing.assert_frame_equal(history.drop(columns="seconds"), alone_history.drop(columns="seconds"))


def test_head_only_stage_writes_model_codes_and_history(tmp_path):
    features, labels = clusters(n=300)
    roles = np.arange(300) % 3
    index = pd.DataFrame({"image_id": [f"i{i}" for i in range(300)][::-1], "label": labels, "train": roles == 0, "database": roles == 1, "query": roles == 2})
    write_descriptors(tmp_path / "features.parquet", index, features)
    cfg = {"margin": 2.0, "head_only": {**HEAD_OPTIONS, "device": "cpu"}}
    outputs = stage_outputs(tmp_path, [12, 4])
    train_head(tmp_path / "features.parquet", "dsh", cfg, 0, outputs)
    for b in (12, 4):
        codes = read_descriptors(outputs[b]["codes"])
        assert codes.n_bits == b and len(codes.values) == 300
        assert list(codes.image_id) == list(index["image_id"]) and (codes.query == index["query"]).all()
        # The saved head takes raw features and reproduces the codes.
        head = load_head(outputs[b]["model"])
        assert head.loss.options["margin"] == 2.0
        np.testing.assert_array_equal(codes_of(head_outputs(head, features)), codes.values)
        assert pd.read_parquet(outputs[b]["history"])["epoch"].tolist() == list(range(1, HEAD_OPTIONS["epochs"] + 1))


@pytest.mark.parametrize("method", ["greedyhash", "ssdh"])
def test_head_only_codes_are_the_seed_s_whatever_ran_before(tmp_path, method):
    """A loss's own parameters (a classifier) start from the seed, not from whatever state
    torch's generator was left in: two stages, two histories of the process, the same codes."""
    features, labels = clusters(n=200)
    index = pd.DataFrame({"image_id": [f"i{i}" for i in range(200)], "label": labels, "train": True, "database": True, "query": False})
    write_descriptors(tmp_path / "features.parquet", index, features)
    codes = []
    for state in (1, 2):
        torch.manual_seed(state)
        outputs = stage_outputs(tmp_path / str(state), [8, 16])
        train_head(tmp_path / "features.parquet", method, {"head_only": {**HEAD_OPTIONS, "epochs": 2, "device": "cpu"}}, 0, outputs)
        codes.append([read_descriptors(outputs[b]["codes"]).values for b in (8, 16)])
    for first, second in zip(*codes):
        np.testing.assert_array_equal(first, second)


def test_head_only_on_multi_label_features_keeps_the_label_sets(tmp_path):
    """Label sets reach the loss as multi-hot targets and the written codes keep them: images
    sharing a label end up nearer in Hamming distance than images sharing none."""
    rng = np.random.default_rng(0)
    n, n_classes = 400, 4
    sets = [sorted(rng.choice(n_classes, size=rng.integers(1, 3), replace=False).tolist()) for _ in range(n)]
    targets = np.zeros((n, n_classes), np.float32)
    for i, classes in enumerate(sets):
        targets[i, classes] = 1
    features = (targets @ rng.normal(0, 3, (n_classes, 16)) + rng.normal(0, 0.5, (n, 16))).astype(np.float32)
    roles = np.arange(n) % 4
    index = pd.DataFrame({"image_id": [f"i{i}" for i in range(n)], "label": [c[0] for c in sets], "labels": sets, "train": roles < 2, "database": roles < 3, "query": roles == 3})
    write_descriptors(tmp_path / "features.parquet", index, features)
    outputs = stage_outputs(tmp_path, [16])
    train_head(tmp_path / "features.parquet", "dpsh", {"head_only": {**HEAD_OPTIONS, "device": "cpu"}}, 0, outputs)
    codes = read_descriptors(outputs[16]["codes"])
    assert codes.is_multilabel and [list(c) for c in codes.labels] == sets
    bits = unpack_bits(codes.values, 16).astype(int)
    distance = np.abs(bits[:, None] - bits[None]).sum(-1)
    share = targets @ targets.T > 0
    off_diagonal = ~np.eye(n, dtype=bool)
    assert distance[share & off_diagonal].mean() + 2 < distance[~share].mean()


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


def backbone_config(size=12, epochs=3, width=None):
    finetune_options = {"epochs": epochs, "batch_size": 16, "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4, "schedule": "cosine", "lr_step_epochs": 5, "lr_gamma": 0.1, "augment": True, "head_only": False, "validation_fraction": 0.0, "device": "cpu", "workers": 0}
    return {"arch": "smallcnn", "weights": "none", "input_size": size, "finetune": finetune_options, **({"width": width} if width else {})}


def stage_outputs(tmp_path, bits):
    return {b: {name: tmp_path / f"{b}" / file for name, file in (("model", "model.pt"), ("codes", "codes.parquet"), ("history", "history.parquet"))} for b in bits}


def test_end_to_end_stage_trains_backbone_hash_layer_and_classifier(tmp_path):
    images = tiny_split(tmp_path)
    outputs = stage_outputs(tmp_path, [8])
    # A smallcnn narrower than the default: the saved network says its width.
    history = train_end_to_end(tmp_path / "manifest.parquet", tmp_path / "split.parquet", backbone_config(width=8), "ssdh", {"alpha": 0.1, "beta": 1.0, "finetune": {"lr": 0.02}}, "digits", 0, outputs)
    assert history["epoch"].tolist() == [1, 2, 3] and {"train_classification", "train_binarization", "train_balance"} <= set(history.columns)
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert history["lr"].iloc[0] < 0.02  # the SSDH recipe overrides the backbone's
    codes = read_descriptors(outputs[8]["codes"])
    assert codes.n_bits == 8 and list(codes.image_id) == list(images["image_id"])
    assert not list(tmp_path.rglob("*.resume"))
    # The saved network is loadable (weights_only) and gives the codes that were written.
    z = run_layers(load_network(outputs[8]["model"]), ImageTensors(images, "L", 12), ("hash",))["hash"]
    np.testing.assert_array_equal(codes_of(z), codes.values)


@pytest.mark.parametrize("method", sorted(set(LOSSES) - {"ssdh"}))
def test_every_method_trains_end_to_end(tmp_path, method):
    images = tiny_split(tmp_path)
    outputs = stage_outputs(tmp_path, [8])
    history = train_end_to_end(tmp_path / "manifest.parquet", tmp_path / "split.parquet", backbone_config(epochs=2), method, {}, "digits", 0, outputs)
    assert history["epoch"].tolist() == [1, 2] and np.isfinite(history["train_loss"]).all()
    net = load_network(outputs[8]["model"])
    assert net.method == method and net.heads["8"].loss.step.item() > 0  # the loss's state is saved with it
    z = run_layers(net, ImageTensors(images, "L", 12), ("hash",))["hash"]
    np.testing.assert_array_equal(codes_of(z), read_descriptors(outputs[8]["codes"]).values)


def test_code_lengths_trained_together_share_the_trunk_and_load_alone(tmp_path):
    images = tiny_split(tmp_path)
    outputs = stage_outputs(tmp_path, [8, 4])
    history = train_end_to_end(tmp_path / "manifest.parquet", tmp_path / "split.parquet", backbone_config(epochs=2), "ssdh", {"alpha": 0.1, "beta": 1.0}, "digits", 0, outputs)
    assert {"train_classification_4", "train_classification_8", "train_accuracy_8"} <= set(history.columns)
    # Each length's history holds its own terms under the usual names.
    own = pd.read_parquet(outputs[8]["history"])
    np.testing.assert_allclose(own["train_classification"], history["train_classification_8"])
    assert not any(c.endswith("_4") for c in own.columns)
    trunks = []
    for b in (4, 8):
        codes = read_descriptors(outputs[b]["codes"])
        net = load_network(outputs[b]["model"])
        assert codes.n_bits == b and net.bits == (b,)
        np.testing.assert_array_equal(codes_of(run_layers(net, ImageTensors(images, "L", 12), ("hash",))["hash"]), codes.values)
        trunks.append(net.backbone.state_dict())
    assert all(torch.equal(trunks[0][key], trunks[1][key]) for key in trunks[0])


def test_joint_heads_learn_from_their_own_loss_and_the_trunk_from_their_mean():
    """With the summed loss, a head's gradient is its own loss's; the trunk's is the mean of
    what each head alone would give it."""
    from cbir.models import build_backbone

    torch.manual_seed(0)
    x, labels = torch.randn(8, 1, 12, 12), torch.arange(8) % 2
    joint = DeepHashNet(build_backbone("smallcnn", "none", in_channels=1, n_classes=2), "ssdh", [4, 8], 2, options={"alpha": 0.1, "beta": 1.0}).train()
    objective = DeepHashObjective(2)
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


DEEP = sorted(set(LOSSES) - {"ssdh"})  # SSDH end to end is in the default run already


def test_every_method_end_to_end_and_head_only_in_the_default_dag(default_run, tmp_path):
    """The five methods beside SSDH, end to end (one short epoch) and head only, added to the
    finished default run: trained, evaluated on both ground truths and in the report's table."""
    import shutil

    import yaml
    from conftest import REPO
    from workflow import jobs_run, snakemake

    run = tmp_path / "run"
    shutil.copytree(default_run, run, symlinks=True)  # a copy: the shared default run stays as it was
    (run / "results/.lock").unlink(missing_ok=True)
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["hashing"]["methods"] += [*DEEP, *(m + "_head" for m in DEEP)]
    config["hashing"].update({m: {"finetune": {"epochs": 1}, "head_only": {"epochs": 3}} for m in DEEP})
    (tmp_path / "deep.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(run, "--cores", "2", configfile=tmp_path / "deep.yaml")
    jobs = jobs_run(result.stdout + result.stderr)
    seeds = len(config["seeds"])
    assert jobs["train_deep_hash_joint"] == jobs["train_deep_hash_head"] == len(DEEP) * seeds and "train_hash" not in jobs and "finetune" not in jobs
    results = read_results(run / "results/report/default/results.tsv")
    for method in [*DEEP, *(m + "_head" for m in DEEP)]:
        rows = results[results["method"] == method]
        assert {"labels", "neighbours"} <= set(rows["ground_truth"]) and set(rows["bits"]) == set(config["hashing"]["bits"]), method
