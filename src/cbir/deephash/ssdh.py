"""SSDH: supervised semantics-preserving deep hashing (Yang, Lin & Chen, TPAMI 2018).

SSDH's loss on the shared hash layer: L sigmoid units a = sigmoid(z)
(the codes: a > 0.5, i.e. z > 0) feed a linear classifier, so that the classes must be predicted
from L nearly binary attributes. The paper's three terms E1, E2, E3, per batch of N images:

    classification  E1 = cross-entropy(Linear(a), labels)
    binarization    E2 = -mean_{n,l} (a_nl - 0.5)^2    (pushes each activation to 0 or 1)
    balance         E3 = mean_l (mean_n a_nl - 0.5)^2  (each bit on for half the images)

    loss = E1 + alpha E2 + beta E3

Choices the paper leaves open, or that differ from it: E1's weight decay is the optimizer's;
for multi-label targets E1 is binary cross-entropy per class (the paper's is a softmax loss
over one label); E2 and E3 are means, not sums, and E3 is taken per bit over the batch (each bit
on for half the images; docs/training-notes.md says why).
"""

from __future__ import annotations

import torch
from torch import nn

from cbir.deephash.base import HashLoss, classification_loss


class SSDH(HashLoss):
    name = "ssdh"
    defaults = {"alpha": 1.0, "beta": 1.0}

    def __init__(self, n_bits: int, n_classes: int, seed: int = 0, **options):
        super().__init__(n_bits, n_classes, seed, **options)
        self.classifier = nn.Linear(self.n_bits, self.n_classes)

    def terms(self, z, targets):
        a = torch.sigmoid(z)
        terms = {
            "classification": classification_loss(self.classifier(a), targets, self.multi_label),
            "binarization": -((a - 0.5) ** 2).mean(),
            "balance": ((a.mean(0) - 0.5) ** 2).mean(),
        }
        loss = terms["classification"] + self.options["alpha"] * terms["binarization"] + self.options["beta"] * terms["balance"]
        return loss, terms

    def logits(self, z):
        return self.classifier(torch.sigmoid(z.float()))
