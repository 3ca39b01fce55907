"""What every deep hashing loss is: a module on the hash layer's outputs.

A deep hashing method here is a hash layer (one linear map, features -> L real outputs z) over a
backbone, trained with a loss on z. Everything else (the trunk, the fine-tuning loop, the head-only
loop on cached features, writing codes) is shared (:mod:`cbir.deephash.core`). The code of an image
is always ``z > 0`` bit by bit (for a sigmoid layer, activation > 0.5; for tanh, sign).

A loss is an ``nn.Module``: its own parameters (a classifier, as SSDH's and GreedyHash's) train
with the hash layer, its buffers (CSQ's hash centers, HashNet's step count) are saved with the
model, so that a resumed training continues exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class HashLoss(nn.Module):
    """A deep hashing loss on the hash layer's raw outputs.

    Subclasses set ``name`` and ``defaults`` (every option with its default value; a method's
    config section may set any of them) and implement :meth:`terms`. They are built as
    ``Loss(n_bits, n_classes, seed=seed, **options)``.

    ``targets`` is an (N, C) float tensor of 0/1: one-hot for single-label data, several ones for
    multi-label data; two images are similar (relevant to each other) when they share a label.
    """

    name: str = ""
    #: Option -> default value.
    defaults: dict = {}

    def __init__(self, n_bits: int, n_classes: int, seed: int = 0, **options):
        super().__init__()
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise ValueError(f"{self.name}: unknown option(s) {', '.join(unknown)}; expected some of {', '.join(sorted(self.defaults)) or 'none'}")
        self.n_bits, self.n_classes, self.seed = int(n_bits), int(n_classes), int(seed)
        self.options = {**self.defaults, **options}
        # Training batches seen so far (forward calls in training mode, one per optimizer step in
        # both training loops; a buffer: saved and restored with the model on resume); losses with a
        # schedule over training (HashNet's continuation) read it.
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        # Whether the data are multi-label (the trainer sets it for the dataset): a classifier's loss depends on it.
        self.multi_label = False

    def forward(self, z: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of a batch (a scalar) and its named terms; counts a step when training."""
        # In float32 even under bf16 autocast: inner products of codes and sigmoids near their
        # threshold need more than bf16's 8 bits of mantissa.
        with torch.autocast(z.device.type, enabled=False):
            loss, terms = self.terms(z.float(), targets.float())
        if self.training:
            self.step += 1
        return loss, terms

    def terms(self, z: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def logits(self, z: torch.Tensor) -> torch.Tensor | None:
        """Class scores of a batch, for methods with a classifier (logged as training accuracy)."""
        return None


def pairwise_similarity(targets: torch.Tensor, others: torch.Tensor | None = None) -> torch.Tensor:
    """S_ij = 1 where images i and j share at least one label, else 0 (float)."""
    others = targets if others is None else others
    return (targets @ others.T > 0).float()


def pair_mean(values: torch.Tensor) -> torch.Tensor:
    """The mean of an (N, N) matrix of per-pair losses over the pairs of two different images
    (an image paired with itself says nothing about similarity); 0 for a batch of one image."""
    n = len(values)
    if n < 2:
        return values.sum() * 0  # no pair, but still a tensor of the graph, so that backward() works
    return values.masked_select(~torch.eye(n, dtype=torch.bool, device=values.device)).mean()


def classification_loss(logits: torch.Tensor, targets: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """Cross-entropy for single-label data; for multi-label data, binary cross-entropy per class
    (each label an independent yes/no), as softmax cannot put probability 1 on several classes.
    Decided for the dataset (:attr:`HashLoss.multi_label`), not per batch: a batch of multi-label
    data whose images happen to have one label each still gets the multi-label loss."""
    if not multi_label:
        return F.cross_entropy(logits.float(), targets.argmax(1))
    return F.binary_cross_entropy_with_logits(logits.float(), targets)
