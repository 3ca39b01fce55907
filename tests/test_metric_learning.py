"""Pair and triplet samplers, the two losses, and FC8 training on cached features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cbir.metric_learning import MODELS, contrastive_loss, descriptors, fit_models, sample_pairs, sample_triplets, train_head, triplet_loss

LABELS = np.repeat(np.arange(5), [2, 3, 10, 40, 1])  # unbalanced, and a class with a single image


def test_pairs_are_balanced_and_labelled_right():
    first, second, same = sample_pairs(LABELS, 1001, np.random.default_rng(0))
    assert len(first) == 1001 and same.sum() == 500
    positive = same == 1
    assert (LABELS[first[positive]] == LABELS[second[positive]]).all()
    assert (first[positive] != second[positive]).all()
    assert (LABELS[first[~positive]] != LABELS[second[~positive]]).all()
    # Positive classes are drawn uniformly among classes with two images, not by class size.
    counts = np.bincount(LABELS[first[positive]], minlength=5)
    assert counts[4] == 0 and counts[:4].min() > 80


def test_triplets_are_labelled_right():
    anchor, positive, negative = sample_triplets(LABELS, 2000, np.random.default_rng(0))
    assert (LABELS[anchor] == LABELS[positive]).all() and (anchor != positive).all()
    assert (LABELS[anchor] != LABELS[negative]).all()
    assert (LABELS[anchor] != 4).all()  # a singleton class cannot anchor a triplet


def test_samplers_are_seeded():
    one = sample_pairs(LABELS, 50, np.random.default_rng(7))
    two = sample_pairs(LABELS, 50, np.random.default_rng(7))
    other = sample_pairs(LABELS, 50, np.random.default_rng(8))
    assert all(np.array_equal(a, b) for a, b in zip(one, two))
    assert not all(np.array_equal(a, b) for a, b in zip(one, other))


def test_samplers_reject_impossible_labels():
    with pytest.raises(ValueError):
        sample_pairs(np.zeros(5, dtype=int), 10, np.random.default_rng(0))
    with pytest.raises(ValueError):
        sample_triplets(np.arange(5), 10, np.random.default_rng(0))


def test_contrastive_loss_by_hand():
    a = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    b = torch.tensor([[3.0, 4.0], [0.3, 0.4], [3.0, 4.0], [0.0, 0.0]])
    same = torch.tensor([1.0, 0.0, 0.0, 1.0])
    # d = 5, 0.5, 5, 0; margin 1: positive 0.5*25, negative 0.5*(1-0.5)^2, negative beyond margin 0, identical positive 0.
    expected = (0.5 * 25 + 0.5 * 0.25 + 0 + 0) / 4
    assert contrastive_loss(a, b, same, margin=1.0).item() == pytest.approx(expected)
    assert contrastive_loss(a[2:3], b[2:3], same[2:3], margin=1.0).item() == 0.0
    assert contrastive_loss(a[3:], b[3:], same[3:], margin=1.0).item() == 0.0
    assert contrastive_loss(a[1:2], b[1:2], same[1:2], margin=1.0).item() > 0


def test_triplet_loss_by_hand():
    anchor = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    positive = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    negative = torch.tensor([[0.0, 2.0], [0.0, 2.0]])
    # d(a,p) = 1, 3; d(a,n) = 2, 2; margin 0.5: max(0, 1-2+0.5) = 0, max(0, 3-2+0.5) = 1.5.
    assert triplet_loss(anchor, positive, negative, margin=0.5).item() == pytest.approx(0.75)
    assert triplet_loss(anchor[:1], positive[:1], negative[:1], margin=0.5).item() == 0.0


OPTIONS = {
    "epochs": 8,
    "batch_size": 16,
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 0.0,
    "contrastive_margin": 0.5,
    "triplet_margin": 0.2,
    "samples_per_epoch": 800,
    "normalize": True,
}


def separable(n_per_class=40, n_classes=4, dim=32, seed=0):
    """Classes separated along a few dimensions, buried under larger nuisance variation."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    centres = np.zeros((n_classes, dim))
    centres[:, :n_classes] = np.eye(n_classes) * 2.0
    features = centres[labels] + rng.normal(scale=[0.3] * n_classes + [3.0] * (dim - n_classes), size=(len(labels), dim))
    return features.astype(np.float32), labels


def leave_one_out_map(x, labels):
    distance = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(distance, np.inf)
    aps = []
    for q in range(len(x)):
        relevant = labels[np.argsort(distance[q], kind="stable")][:-1] == labels[q]
        hits = np.cumsum(relevant)
        aps.append((hits[relevant] / (np.flatnonzero(relevant) + 1)).mean())
    return float(np.mean(aps))


@pytest.mark.parametrize("objective", ["contrastive", "triplet"])
def test_metric_training_beats_the_pretrained_head(objective):
    features, labels = separable()
    torch.manual_seed(0)
    pretrained = torch.nn.Linear(features.shape[1], 16)
    before = leave_one_out_map(descriptors(pretrained, features), labels)
    trained, history = train_head(pretrained, features, labels, objective, OPTIONS, seed=0)
    after = leave_one_out_map(descriptors(trained, features), labels)
    assert after > before + 0.2, (before, after)
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]
    # Training works on a copy: the starting FC8 is unchanged.
    assert not torch.equal(pretrained.weight, trained.weight)


def test_classification_heads():
    features, labels = separable()
    ft, _ = train_head(None, features, labels, "classification", OPTIONS, seed=0)
    assert ft.out_features == 4
    assert (descriptors(ft, features, normalize=False).argmax(1) == labels).mean() > 0.9
    # From a metric-trained FC8 with other outputs, an auxiliary classifier carries the loss.
    wide = torch.nn.Linear(features.shape[1], 16)
    pt_ft, _ = train_head(wide, features, labels, "classification", OPTIONS, seed=0)
    assert pt_ft.out_features == 16


def test_training_is_seeded():
    features, labels = separable()
    head = torch.nn.Linear(features.shape[1], 8)
    one, _ = train_head(head, features, labels, "triplet", OPTIONS, seed=3)
    two, _ = train_head(head, features, labels, "triplet", OPTIONS, seed=3)
    assert torch.equal(one.weight, two.weight)


def test_every_model_starts_from_a_known_model():
    assert set(MODELS) == {"PT", "FT", "SN-PT", "SN-PT-FT", "SN-FT", "TN-PT", "TN-PT-FT", "TN-FT"}
    for model, (start, _) in MODELS.items():
        assert start is None or start in MODELS


def test_standardisation_is_folded_back_exactly():
    from cbir.metric_learning import _standardized, _unstandardized

    torch.manual_seed(0)
    head = torch.nn.Linear(6, 3)
    mean, scale = torch.randn(6), torch.rand(6) + 0.1
    x = torch.randn(5, 6)
    torch.testing.assert_close(_standardized(head, mean, scale)((x - mean) / scale), head(x))
    torch.testing.assert_close(_unstandardized(_standardized(head, mean, scale), mean, scale)(x), head(x))


def test_training_does_not_depend_on_the_feature_scale():
    """Tiny features (a randomly initialised backbone's) train as well as unit-scale ones."""
    features, labels = separable()
    torch.manual_seed(0)
    pretrained = torch.nn.Linear(features.shape[1], 16)
    maps = []
    for factor in (1.0, 1e-4):
        start = torch.nn.Linear(features.shape[1], 16)
        with torch.no_grad():  # the same function on the rescaled features
            start.weight.copy_(pretrained.weight / factor)
            start.bias.copy_(pretrained.bias)
        trained, _ = train_head(start, features * factor, labels, "triplet", OPTIONS, seed=0)
        maps.append(leave_one_out_map(descriptors(trained, features * factor), labels))
    assert maps[1] == pytest.approx(maps[0], abs=0.02)


def test_fit_models_trains_each_start_first_and_asks_for_pt_only_when_needed():
    features, labels = separable()
    options = {**OPTIONS, "epochs": 1}
    asked = []

    def pretrained():
        asked.append(True)
        return torch.nn.Linear(features.shape[1], 16)

    fitted = [model for model, _, _ in fit_models(["SN-FT"], features, labels, options, 0, pretrained)]
    assert fitted == ["FT", "SN-FT"] and not asked
    fitted = {model: head for model, head, _ in fit_models(["TN-PT-FT", "SN-PT"], features, labels, options, 0, pretrained)}
    assert list(fitted) == ["PT", "TN-PT", "TN-PT-FT", "SN-PT"] and asked == [True]
    # Each model is trained from its start, as train_head alone would train it.
    alone, _ = train_head(fitted["PT"], features, labels, "triplet", options, seed=0)
    assert torch.equal(alone.weight, fitted["TN-PT"].weight)
