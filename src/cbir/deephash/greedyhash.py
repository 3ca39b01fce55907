"""GreedyHash (Su, Zhang, Yue & Tian, "Greedy Hash: Towards Fast Optimization for Accurate Hash
Coding in CNN", NeurIPS 2018).

The codes themselves, h = sgn(z), are fed to a linear classifier: the forward pass uses the exact
binary code and the backward pass copies the gradient of h to z unchanged (dL/dz = dL/dh, the
paper's greedy update of the sign layer, Sec. 3), with a penalty keeping z near +-1 so that
sgn(z) and z stay close:

    classification  cross-entropy(Linear(sgn z), labels)
    quantization    mean_{n,l} | |z_nl| - 1 |^3    (the paper's ||z - sgn z||_3^3, as a mean)

    loss = classification + alpha quantization

alpha = 0.1 and a classifier without bias, as in swuxyj/DeepHash-pytorch (which takes alpha = 1
for ImageNet). For multi-label targets the classification term is binary cross-entropy per
class (the paper treats single-label data only).
"""

from __future__ import annotations

import torch
from torch import nn

from cbir.deephash.base import HashLoss, classification_loss


class _SignStraightThrough(torch.autograd.Function):
    """sgn(z) forward; the gradient passed back unchanged, as if the sign were the identity."""

    @staticmethod
    def forward(ctx, z):
        return z.sign()

    @staticmethod
    def backward(ctx, grad):
        return grad


class GreedyHash(HashLoss):
    name = "greedyhash"
    defaults = {"alpha": 0.1}

    def __init__(self, n_bits: int, n_classes: int, seed: int = 0, **options):
        super().__init__(n_bits, n_classes, seed, **options)
        self.classifier = nn.Linear(self.n_bits, self.n_classes, bias=False)

    def terms(self, z, targets):
        terms = {
            "classification": classification_loss(self.logits(z), targets, self.multi_label),
            "quantization": ((z.abs() - 1).abs() ** 3).mean(),
        }
        return terms["classification"] + self.options["alpha"] * terms["quantization"], terms

    def logits(self, z):
        return self.classifier(_SignStraightThrough.apply(z.float()))
