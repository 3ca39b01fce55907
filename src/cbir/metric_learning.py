"""The eight models of the siamese/triplet paper, trained on cached penultimate (FC7) features.

Each model is a linear descriptor layer, FC8, on top of the frozen backbone's penultimate layer;
images are ranked by the Euclidean distance of their FC8 descriptors. A model's name says how
its FC8 was obtained, ``<objective>-<start>``:

==========  ==============================================================================
PT          the pretrained network's own FC8 (ImageNet's 1,000 classes), no training
FT          a new FC8 with one output per target class, trained with cross-entropy
SN-PT       PT's FC8 trained further as a siamese network (contrastive loss on pairs)
SN-FT       FT's FC8 trained further as a siamese network
SN-PT-FT    SN-PT's FC8 fine-tuned with cross-entropy on the target classes, through an
            auxiliary linear classifier that is dropped afterwards (metric first, then classes;
            SN-FT is the other order)
TN-*        the same with a triplet network (triplet loss on anchor, positive, negative)
==========  ==============================================================================

The siamese and triplet branches share one FC8: a pair or triplet is the same layer applied to
two or three cached feature vectors. Descriptors (and the losses) are L2-normalised by default,
so the margins have a scale-free meaning.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from cbir.config import METRIC_MODELS as MODELS

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Samplers
# --------------------------------------------------------------------------------------------


def _by_class(labels: np.ndarray) -> dict[int, np.ndarray]:
    return {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}


def sample_pairs(labels: np.ndarray, n_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n_pairs`` index pairs, half positive (same class, two different images), half negative.

    Returns (first, second, same) with ``same`` 1.0 for positives and 0.0 for negatives, shuffled.
    """
    labels = np.asarray(labels)
    members = _by_class(labels)
    usable = np.array([c for c, idx in members.items() if len(idx) >= 2])
    if len(usable) == 0 or len(members) < 2:
        raise ValueError("pairs need a class with two images and at least two classes")
    n_pos = n_pairs // 2
    # Positives: a class (uniformly, so small classes are not drowned), then two distinct members.
    pos_classes = rng.choice(usable, size=n_pos)
    first_pos = np.empty(n_pos, dtype=np.int64)
    second_pos = np.empty(n_pos, dtype=np.int64)
    for c in np.unique(pos_classes):
        where = np.flatnonzero(pos_classes == c)
        pool = members[int(c)]
        # Two distinct members: a position, and an offset of 1..n-1 from it.
        position = rng.integers(len(pool), size=len(where))
        first_pos[where] = pool[position]
        second_pos[where] = pool[(position + rng.integers(1, len(pool), size=len(where))) % len(pool)]
    # Negatives: two images drawn at random until their classes differ.
    n_neg = n_pairs - n_pos
    first_neg = rng.integers(len(labels), size=n_neg)
    second_neg = rng.integers(len(labels), size=n_neg)
    clash = labels[first_neg] == labels[second_neg]
    while clash.any():
        second_neg[clash] = rng.integers(len(labels), size=int(clash.sum()))
        clash = labels[first_neg] == labels[second_neg]
    first = np.concatenate([first_pos, first_neg])
    second = np.concatenate([second_pos, second_neg])
    same = np.concatenate([np.ones(n_pos), np.zeros(n_neg)]).astype(np.float32)
    order = rng.permutation(n_pairs)
    return first[order], second[order], same[order]


def sample_triplets(labels: np.ndarray, n_triplets: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n_triplets`` (anchor, positive, negative): the positive shares the anchor's class and is
    another image, the negative is of another class. Anchors are drawn among images whose class
    has at least two images."""
    labels = np.asarray(labels)
    members = _by_class(labels)
    if len(members) < 2:
        raise ValueError("triplets need at least two classes")
    eligible = np.flatnonzero([len(members[int(c)]) >= 2 for c in labels])
    if len(eligible) == 0:
        raise ValueError("triplets need a class with two images")
    anchor = rng.choice(eligible, size=n_triplets)
    positive = np.empty(n_triplets, dtype=np.int64)
    for c in np.unique(labels[anchor]):
        where = np.flatnonzero(labels[anchor] == c)
        pool = members[int(c)]
        # Draw among the other members: an offset in 1..n-1 from the anchor's position.
        position = np.searchsorted(pool, anchor[where])
        positive[where] = pool[(position + rng.integers(1, len(pool), size=len(where))) % len(pool)]
    negative = rng.integers(len(labels), size=n_triplets)
    clash = labels[negative] == labels[anchor]
    while clash.any():
        negative[clash] = rng.integers(len(labels), size=int(clash.sum()))
        clash = labels[negative] == labels[anchor]
    return anchor, positive, negative


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------


def contrastive_loss(first: torch.Tensor, second: torch.Tensor, same: torch.Tensor, margin: float) -> torch.Tensor:
    """Hadsell, Chopra & LeCun (2006): mean of ½·d² for positive pairs and ½·max(0, m − d)² for
    negative ones, d the Euclidean distance of the two descriptors."""
    distance = F.pairwise_distance(first, second, eps=0.0)
    return 0.5 * (same * distance.pow(2) + (1 - same) * F.relu(margin - distance).pow(2)).mean()


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean of max(0, d(a, p) − d(a, n) + m), Euclidean d (torch's triplet margin loss)."""
    return F.triplet_margin_loss(anchor, positive, negative, margin=margin, p=2, eps=0.0)


# --------------------------------------------------------------------------------------------
# Training an FC8
# --------------------------------------------------------------------------------------------


def descriptors(head: nn.Linear, features: np.ndarray | torch.Tensor, normalize: bool = True, batch_size: int = 4096) -> np.ndarray:
    """FC8 descriptors of cached penultimate features (L2-normalised unless ``normalize`` is false)."""
    features = torch.tensor(np.asarray(features), dtype=torch.float32)
    with torch.no_grad():
        out = torch.cat([head(chunk) for chunk in features.split(batch_size)])
        if normalize:
            out = F.normalize(out, dim=1)
    return out.numpy()


def train_head(
    head: nn.Linear | None,
    features: np.ndarray,
    labels: np.ndarray,
    objective: str,
    options: dict,
    seed: int,
) -> tuple[nn.Linear, pd.DataFrame]:
    """Train an FC8 on cached features with ``objective``; return it and per-epoch losses.

    ``head`` is the FC8 to start from; for ``classification`` without one, a new FC8 with one
    output per class is trained (the FT model); with one, an auxiliary classifier on its outputs
    carries the cross-entropy (the *-PT-FT models). ``options`` holds the config's
    ``metric_learning`` keys (epochs, batch_size, lr, momentum, weight_decay, margins, samples
    per epoch, normalize).
    """
    if objective not in ("classification", "contrastive", "triplet"):
        raise ValueError(f"unknown objective {objective!r}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    # Train on per-dimension z-scores of the features and fold the scaling back into the layer
    # afterwards: the same linear map, but a learning rate that does not depend on the scale of
    # the cached features (a randomly initialised backbone's are tiny, ImageNet's are large).
    features = np.asarray(features, dtype=np.float32)
    mean = torch.from_numpy(features.mean(0))
    scale = torch.from_numpy(features.std(0))
    scale = torch.where(scale > 1e-12 * max(float(scale.max()), 1e-30), scale, torch.ones_like(scale))
    x = (torch.from_numpy(features) - mean) / scale
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    n_classes = int(y.max()) + 1
    if head is None:
        if objective != "classification":
            raise ValueError(f"{objective} training starts from an existing FC8")
        head = nn.Linear(x.shape[1], n_classes)
    else:
        head = _standardized(head, mean, scale)
    auxiliary = nn.Linear(head.out_features, n_classes) if objective == "classification" and head.out_features != n_classes else None
    params = list(head.parameters()) + (list(auxiliary.parameters()) if auxiliary else [])
    optimizer = torch.optim.SGD(params, lr=options["lr"], momentum=options["momentum"], weight_decay=options["weight_decay"])
    normalize = options["normalize"]

    def embed(batch):
        out = head(batch)
        return F.normalize(out, dim=1) if normalize else out

    history = []
    samples = options["samples_per_epoch"] or len(x)
    # Each epoch's examples are gathered once and its batches are views of them: at batch 16 a
    # step is mostly per-operation overhead, and this takes two gathers out of each.
    batch = options["batch_size"]
    for epoch in range(1, options["epochs"] + 1):
        started, total, batches = time.perf_counter(), 0.0, 0
        if objective == "classification":
            order = torch.from_numpy(rng.permutation(len(x))[:samples])
            for inputs, targets in zip(x[order].split(batch), y[order].split(batch)):
                logits = head(inputs)
                loss = F.cross_entropy(auxiliary(logits) if auxiliary else logits, targets)
                total, batches = _step(optimizer, loss, total, batches)
        elif objective == "contrastive":
            first, second, same = map(torch.from_numpy, sample_pairs(labels, samples, rng))
            for a, b, s in zip(x[first].split(batch), x[second].split(batch), same.split(batch)):
                loss = contrastive_loss(embed(a), embed(b), s, options["contrastive_margin"])
                total, batches = _step(optimizer, loss, total, batches)
        else:
            anchor, positive, negative = map(torch.from_numpy, sample_triplets(labels, samples, rng))
            for a, p, n in zip(x[anchor].split(batch), x[positive].split(batch), x[negative].split(batch)):
                loss = triplet_loss(embed(a), embed(p), embed(n), options["triplet_margin"])
                total, batches = _step(optimizer, loss, total, batches)
        history.append({"epoch": epoch, "loss": total / max(batches, 1), "seconds": time.perf_counter() - started})
        log.info("%s epoch %d/%d  loss %.4f", objective, epoch, options["epochs"], history[-1]["loss"])
    return _unstandardized(head, mean, scale), pd.DataFrame(history, columns=["epoch", "loss", "seconds"])


def _step(optimizer, loss, total, batches):
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return total + loss.item(), batches + 1


def _standardized(head: nn.Linear, mean: torch.Tensor, scale: torch.Tensor) -> nn.Linear:
    """The layer that maps (x - mean) / scale as ``head`` maps x (a copy; ``head`` is unchanged)."""
    out = nn.Linear(head.in_features, head.out_features)
    with torch.no_grad():
        out.weight.copy_(head.weight * scale)
        out.bias.copy_(head.bias + head.weight @ mean)
    return out


def _unstandardized(head: nn.Linear, mean: torch.Tensor, scale: torch.Tensor) -> nn.Linear:
    """The inverse of :func:`_standardized`: a layer on raw features."""
    out = nn.Linear(head.in_features, head.out_features)
    with torch.no_grad():
        out.weight.copy_(head.weight / scale)
        out.bias.copy_(head.bias - out.weight @ mean)
    return out


# --------------------------------------------------------------------------------------------
# The stage: one model's FC8 and descriptors
# --------------------------------------------------------------------------------------------


def save_head(head: nn.Linear, path) -> None:
    from cbir.training import save_checkpoint

    save_checkpoint({"state_dict": head.state_dict()}, path)


def load_head(path) -> nn.Linear:
    """An FC8 written by :func:`save_head`."""
    from cbir.models import load_state_dict

    state = load_state_dict(path)
    if set(state) != {"weight", "bias"} or state["weight"].ndim != 2:
        raise ValueError(f"{path} holds no linear layer (keys {sorted(state)})")
    head = nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
    head.load_state_dict(state)
    return head


def fit_models(models, features: np.ndarray, labels: np.ndarray, options: dict, seed: int, pretrained: Callable[[], nn.Linear]) -> Iterator[tuple[str, nn.Linear, pd.DataFrame]]:
    """Train the FC8 of each of ``models`` on ``features`` (cached penultimate features of the
    training images) and their ``labels``, in the order their starting points need (a model's
    start is trained even when not asked for); yield (model, FC8, per-epoch history) as each is
    done. PT's FC8 is ``pretrained()``, called only when a model needs it.
    """
    heads: dict[str, nn.Linear] = {}
    for model in _with_starts(models):
        start, objective = MODELS[model]
        if model == "PT":
            head, history = pretrained(), pd.DataFrame(columns=["epoch", "loss", "seconds"])
        else:
            log.info("training %s (%s from %s) on %d cached %d-d features", model, objective, start or "scratch", len(features), features.shape[1])
            head, history = train_head(heads[start] if start else None, features, labels, objective, options, seed)
        heads[model] = head
        yield model, head, history


def train_models(models, features_path, options: dict, seed: int, backbone_cfg: dict, dataset_kind: str, outputs: dict, weights_path=None) -> None:
    """:func:`fit_models` on the split's training images; write each asked-for model's FC8,
    descriptors and history to ``outputs[model]`` (a dict with ``head``, ``descriptors`` and
    ``history`` paths). PT takes the pretrained backbone's own head.
    """
    from cbir.io import read_descriptors, write_descriptors, write_parquet

    features = read_descriptors(features_path)
    if features.is_binary:
        raise ValueError(f"{features_path} holds binary codes, not features")

    def pretrained():
        head = pretrained_head(backbone_cfg, dataset_kind, seed, weights_path)
        if head.in_features != features.values.shape[1]:
            raise ValueError(f"the pretrained head takes {head.in_features} features, {features_path} has {features.values.shape[1]}")
        return head

    train = features.subset("train")
    for model, head, history in fit_models(models, train.values, train.label, options, seed, pretrained):
        if model in outputs:
            save_head(head, outputs[model]["head"])
            write_descriptors(outputs[model]["descriptors"], features.index_frame(), descriptors(head, features.values, options["normalize"]))
            write_parquet(history, outputs[model]["history"])


def _with_starts(models) -> list[str]:
    """``models`` and the models they start from, each after its start."""
    ordered: list[str] = []

    def add(model):
        start = MODELS[model][0]
        if start:
            add(start)
        if model not in ordered:
            ordered.append(model)

    for model in models:
        add(model)
    return ordered


def pretrained_head(backbone_cfg: dict, dataset_kind: str, seed: int, weights_path=None) -> nn.Linear:
    """The pretrained network's own classifier head (PT's FC8), built as the features were."""
    from cbir.features import load_backbone
    from cbir.training import seed_everything

    seed_everything(seed)  # the same random weights as the cached features, for weights: none
    return load_backbone(backbone_cfg, dataset_kind, weights_path)[0].head
