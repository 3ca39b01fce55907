"""Backbones, weights files, fine-tuning and feature extraction on tiny fixtures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cbir.models import build_backbone
from cbir.training import Augment, Batches, ImageTensors, classification_objective, finetune, run_layers, save_checkpoint

OPTIONS = {
    "epochs": 1,
    "batch_size": 16,
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "schedule": "step",
    "lr_step_epochs": 5,
    "lr_gamma": 0.1,
    "augment": True,
    "head_only": False,
    "validation_fraction": 0.0,
    "device": "cpu",
    "workers": 0,
}


@pytest.mark.parametrize(
    "arch, size, dims",
    [
        ("smallcnn", 16, {"penultimate": 128, "logits": 7}),
        ("resnet18", 32, {"penultimate": 512, "logits": 7}),
        ("resnet50", 32, {"penultimate": 2048, "logits": 7}),
        ("alexnet", 64, {"fc6": 4096, "penultimate": 4096, "logits": 7}),
    ],
)
def test_layer_shapes(arch, size, dims):
    torch.manual_seed(0)
    backbone = build_backbone(arch, "none", in_channels=3, n_classes=7).eval()
    with torch.no_grad():
        out = backbone.layers(torch.randn(2, 3, size, size), tuple(dims))
    assert {name: tuple(t.shape) for name, t in out.items()} == {name: (2, d) for name, d in dims.items()}
    if arch == "alexnet":  # FC6 and FC7 are taken after their ReLU
        assert (out["fc6"] >= 0).all() and (out["penultimate"] >= 0).all()


def test_replace_head_keeps_trunk():
    backbone = build_backbone("smallcnn", "none", in_channels=1, n_classes=10)
    trunk_before = [p.clone() for p in backbone.trunk_parameters()]
    backbone.replace_head(3)
    assert backbone.head.out_features == 3
    assert all(torch.equal(a, b) for a, b in zip(trunk_before, backbone.trunk_parameters()))


def test_weights_file_round_trip(tmp_path):
    torch.manual_seed(0)
    original = build_backbone("resnet18", "none", n_classes=5).eval()
    path = tmp_path / "weights.pt"
    torch.save(original.model.state_dict(), path)
    loaded = build_backbone("resnet18", str(path)).eval()
    assert loaded.head.out_features == 5
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(original(x), loaded(x))
    # The fine-tuning stage's file format (a dict holding the state dict) loads too.
    save_checkpoint({"arch": "resnet18", "state_dict": original.model.state_dict()}, tmp_path / "model.pt")
    with torch.no_grad():
        torch.testing.assert_close(original(x), build_backbone("resnet18", str(tmp_path / "model.pt")).eval()(x))


def test_smallcnn_width_is_configured_or_read_from_its_weights(tmp_path):
    wide = build_backbone("smallcnn", "none", in_channels=1, n_classes=3, width=8)
    assert wide.model.features[0].out_channels == 8 and wide.head.in_features == 64  # 8 x width
    path = tmp_path / "wide.pt"
    torch.save(wide.model.state_dict(), path)
    assert build_backbone("smallcnn", str(path), in_channels=1).model.features[0].out_channels == 8
    with pytest.raises(ValueError, match="wide.pt holds a smallcnn of width 8, not 16"):
        build_backbone("smallcnn", str(path), in_channels=1, width=16)


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        build_backbone("resnet18", str(tmp_path / "nothere.pt"))


def test_corrupt_weights_file_is_named(tmp_path):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="corrupt.pt"):
        build_backbone("resnet18", str(path))


def test_weights_of_another_arch_are_named(tmp_path):
    path = tmp_path / "resnet18.pt"
    torch.save(build_backbone("resnet18", "none", n_classes=4).model.state_dict(), path)
    with pytest.raises(ValueError, match="resnet18.pt.*does not fit arch 'resnet50'"):
        build_backbone("resnet50", str(path))
    with pytest.raises(ValueError, match="does not fit arch 'alexnet'"):
        build_backbone("alexnet", str(path))


def test_weights_file_that_runs_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": Payload()}, path)
    with pytest.raises(ValueError, match="evil.pt"):
        build_backbone("resnet18", str(path))


def tiny_images(tmp_path, n=96, size=12, seed=0) -> pd.DataFrame:
    """Two classes that differ in brightness: learnable in one epoch."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    pixels = rng.integers(0, 100, (n, size, size, 1)).astype(np.uint8) + (labels * 120)[:, None, None, None].astype(np.uint8)
    np.save(tmp_path / "pixels.npy", pixels)
    return pd.DataFrame({"image_id": [f"train/{i:05d}" for i in range(n)], "label": labels, "path": str(tmp_path / "pixels.npy"), "index": np.arange(n)})


def mean_loss(backbone, dataset) -> float:
    logits = torch.from_numpy(run_layers(backbone, dataset, ("logits",))["logits"])
    return torch.nn.functional.cross_entropy(logits, torch.tensor(dataset.labels)).item()


def test_one_epoch_lowers_training_loss(tmp_path):
    torch.manual_seed(0)
    dataset = ImageTensors(tiny_images(tmp_path), "L", 12)
    backbone = build_backbone("smallcnn", "none", in_channels=1, n_classes=2)
    before = mean_loss(backbone, dataset)
    history = finetune(backbone, dataset, None, OPTIONS, flip=False, seed=0)
    assert len(history) == 1 and history["train_loss"].notna().all()
    assert mean_loss(backbone, dataset) < 0.8 * before


@pytest.mark.parametrize("schedule", ["step", "cosine", "onecycle"])
def test_learning_rate_schedules(tmp_path, schedule):
    """The rate at the end of each of 8 epochs: step keeps it until its step, cosine anneals it
    to 0, onecycle rises over the first quarter (from a tenth of it) and then anneals to 0."""
    dataset = ImageTensors(tiny_images(tmp_path, n=32), "L", 12)
    options = {**OPTIONS, "epochs": 8, "lr": 0.1, "lr_step_epochs": 6, "schedule": schedule}
    lr = finetune(build_backbone("smallcnn", "none", in_channels=1, n_classes=2), dataset, None, options, flip=False, seed=0)["lr"].to_numpy()
    if schedule == "step":
        np.testing.assert_allclose(lr, [0.1] * 5 + [0.01] * 3)
    else:
        peak = int(np.argmax(lr))
        assert lr[-1] == pytest.approx(0, abs=1e-12) and np.all(np.diff(lr[peak:]) < 0)
        assert peak == (1 if schedule == "onecycle" else 0) and lr[peak] == pytest.approx(0.1 if schedule == "onecycle" else 0.1 * 0.5 * (1 + np.cos(np.pi / 8)))
        if schedule == "onecycle":
            assert lr[0] == pytest.approx(0.1 * (0.1 + 0.9 * 0.5))  # half-way through the warm-up


def test_bf16_precision_trains_on_a_cpu(tmp_path):
    torch.manual_seed(0)
    dataset = ImageTensors(tiny_images(tmp_path), "L", 12)
    backbone = build_backbone("smallcnn", "none", in_channels=1, n_classes=2)
    before = mean_loss(backbone, dataset)
    finetune(backbone, dataset, None, {**OPTIONS, "precision": "bf16"}, flip=False, seed=0)
    assert mean_loss(backbone, dataset) < 0.8 * before
    features = run_layers(backbone, dataset, ("penultimate",), precision="bf16")["penultimate"]
    assert features.dtype == np.float32 and np.isfinite(features).all()
    with pytest.raises(ValueError, match="precision"):
        finetune(backbone, dataset, None, {**OPTIONS, "precision": "half"}, flip=False, seed=0)


def test_head_only_trains_only_the_head(tmp_path):
    dataset = ImageTensors(tiny_images(tmp_path), "L", 12)
    backbone = build_backbone("smallcnn", "none", in_channels=1, n_classes=2)
    trunk = {k: v.clone() for k, v in backbone.model.state_dict().items() if not k.startswith("classifier")}
    head = backbone.head.weight.detach().clone()
    finetune(backbone, dataset, None, {**OPTIONS, "head_only": True}, flip=False, seed=0)
    after = backbone.model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in trunk.items())  # batch-norm statistics included
    assert not torch.equal(head, backbone.head.weight)


def test_extraction_is_repeatable_and_batch_size_changes_only_rounding(tmp_path):
    dataset = ImageTensors(tiny_images(tmp_path), "L", 12)
    torch.manual_seed(0)
    backbone = build_backbone("smallcnn", "none", in_channels=1, n_classes=2)
    first = run_layers(backbone, dataset, ("penultimate",), batch_size=7)["penultimate"]
    # Same process, inputs and batch size: the same kernels run, so the bits are guaranteed equal.
    np.testing.assert_array_equal(run_layers(backbone, dataset, ("penultimate",), batch_size=7)["penultimate"], first)
    # Another batch size may pick other kernels (which ones depends on the CPU: AVX2 and AVX-512
    # differ), so only float32 rounding may differ: relative to the scale of the features.
    second = run_layers(backbone, dataset, ("penultimate",), batch_size=32)["penultimate"]
    np.testing.assert_allclose(second, first, rtol=0, atol=1e-4 * np.abs(first).max())
    assert first.dtype == np.float32 and first.shape == (96, 128)


class Interrupted(RuntimeError):
    pass


def test_killed_fine_tuning_resumes_from_checkpoint(tmp_path, caplog):
    images = tiny_images(tmp_path)
    options = {**OPTIONS, "epochs": 3}
    steps_per_epoch = 96 // OPTIONS["batch_size"]

    def fresh():
        torch.manual_seed(0)
        return build_backbone("smallcnn", "none", in_channels=1, n_classes=2)

    uninterrupted = fresh()
    finetune(uninterrupted, ImageTensors(images, "L", 12), None, options, flip=True, seed=0)

    calls = 0

    def dies_in_second_epoch(model, x, labels):
        nonlocal calls
        calls += 1
        if calls > steps_per_epoch + 2:
            raise Interrupted("killed")
        return classification_objective(model, x, labels)

    resume = tmp_path / "model.pt.resume"
    with pytest.raises(Interrupted):
        finetune(fresh(), ImageTensors(images, "L", 12), None, options, flip=True, seed=0, resume_path=resume, run_id="a", objective=dies_in_second_epoch)
    assert resume.is_file()

    resumed = fresh()
    with caplog.at_level("INFO"):
        history = finetune(resumed, ImageTensors(images, "L", 12), None, options, flip=True, seed=0, resume_path=resume, run_id="a")
    assert "resumed from" in caplog.text and "after epoch 1" in caplog.text
    assert history["epoch"].tolist() == [1, 2, 3]
    # Same process, inputs and batches: the resumed run is bit-identical to the uninterrupted one
    # (shuffling, augmentation and dropout random states are restored with the weights).
    for key, value in uninterrupted.model.state_dict().items():
        torch.testing.assert_close(value, resumed.model.state_dict()[key], rtol=0, atol=0, msg=key)

    # A checkpoint of another configuration is not resumed.
    caplog.clear()
    with caplog.at_level("INFO"):
        finetune(fresh(), ImageTensors(images, "L", 12), None, options, flip=False, seed=0, resume_path=resume, run_id="b")
    assert "belongs to another configuration" in caplog.text


def test_same_seed_same_training_other_seed_other_training(tmp_path):
    images = tiny_images(tmp_path)

    def trained(seed):
        torch.manual_seed(0)
        backbone = build_backbone("smallcnn", "none", in_channels=1, n_classes=2)
        finetune(backbone, ImageTensors(images, "L", 12), None, OPTIONS, flip=True, seed=seed)
        return backbone.head.weight.detach()

    first = trained(0)
    torch.testing.assert_close(trained(0), first, rtol=0, atol=0)
    assert not torch.allclose(trained(1), first)


def test_streamed_and_resident_batches_are_the_same(tmp_path):
    dataset = ImageTensors(tiny_images(tmp_path, n=50), "L", 12)
    order = torch.randperm(50, generator=torch.Generator().manual_seed(3))
    resident = Batches(dataset, 16, torch.device("cpu"))
    streamed = Batches(dataset, 16, torch.device("cpu"), workers=2, resident_gib=0)
    assert resident.resident and not streamed.resident
    pairs = list(zip(resident(order), streamed(order), strict=True))
    assert [len(images) for (images, _), _ in pairs] == [16, 16, 16, 2]
    for (images_a, labels_a), (images_b, labels_b) in pairs:
        assert torch.equal(images_a, images_b) and torch.equal(labels_a, labels_b)
    first = next(resident(order))[0]
    assert torch.equal(first[0], dataset[int(order[0])][0])  # batches follow the order given
    # A last batch of one image (batch norm cannot train on it) is left out on request.
    assert [len(i) for i, _ in Batches(dataset, 7, torch.device("cpu"))(order, drop_single=True)] == [7] * 7


def test_fine_tuning_streamed_from_disk_learns_too(tmp_path):
    torch.manual_seed(0)
    dataset = ImageTensors(tiny_images(tmp_path), "L", 12)
    backbone = build_backbone("smallcnn", "none", in_channels=1, n_classes=2)
    before = mean_loss(backbone, dataset)
    finetune(backbone, dataset, None, {**OPTIONS, "resident_gib": 0}, flip=False, seed=0)
    assert mean_loss(backbone, dataset) < 0.8 * before


def test_augmentation_draws_within_its_ranges():
    n = 4000
    generator = torch.Generator().manual_seed(0)
    for flip in (False, True):
        theta = Augment((0.5,), (0.5,), flip=flip).random_theta(n, "cpu", generator)
        det = theta[:, 0, 0] * theta[:, 1, 1] - theta[:, 0, 1] * theta[:, 1, 0]  # mirror / scale²
        scale = det.abs().rsqrt()
        angle = torch.rad2deg(torch.atan2(theta[:, 1, 0] * torch.sign(det), theta[:, 1, 1]))
        shift = theta[:, :, 2] / 2  # as a fraction of the image size
        assert 0.9 - 1e-6 <= scale.min() < 0.91 and 1.09 < scale.max() <= 1.1 + 1e-6
        assert -10 - 1e-4 <= angle.min() < -9.5 and 9.5 < angle.max() <= 10 + 1e-4
        assert -0.1 - 1e-6 <= shift.min() < -0.095 and 0.095 < shift.max() <= 0.1 + 1e-6
        mirrored = (det < 0).float().mean().item()
        assert (0.45 < mirrored < 0.55) if flip else mirrored == 0


def test_augmentation_is_seeded_and_flips_only_when_asked():
    images = torch.arange(2 * 8 * 8, dtype=torch.uint8).view(2, 1, 8, 8)
    augment = Augment((0.0,), (1.0,), flip=True)

    def augmented(seed):
        return augment(images, train=True, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(augmented(0), augmented(0)) and not torch.equal(augmented(0), augmented(1))
    # Without rotation, scaling and shifting only the flip is left: each image mirrored or not.
    flips_only = Augment((0.0,), (1.0,), flip=True, degrees=0, translate=0, scale=(1, 1))
    plain = images.float() / 255
    outcomes = set()
    for seed in range(8):
        out = flips_only(images, train=True, generator=torch.Generator().manual_seed(seed))
        for i in range(2):
            mirrored = torch.allclose(out[i], plain[i].flip(-1), atol=1e-5)
            assert mirrored or torch.allclose(out[i], plain[i], atol=1e-5)
            outcomes.add(mirrored)
    assert outcomes == {True, False}
    assert torch.equal(augment(images), plain)  # not training: normalisation only


def test_compile_option_runs_the_objective_through_torch_compile(tmp_path, monkeypatch):
    # Dynamo's tracing with the eager backend: the option's plumbing, without minutes of C++ codegen.
    compiled, compile = [], torch.compile

    def eager_compile(fn, **kwargs):
        compiled.append(fn)
        return compile(fn, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    torch.manual_seed(0)
    dataset = ImageTensors(tiny_images(tmp_path), "L", 12)
    backbone = build_backbone("smallcnn", "none", in_channels=1, n_classes=2)
    before = mean_loss(backbone, dataset)
    finetune(backbone, dataset, None, {**OPTIONS, "compile": True}, flip=False, seed=0)
    assert len(compiled) == 1
    assert mean_loss(backbone, dataset) < 0.8 * before
