"""HashNet: deep learning to hash by continuation (Cao, Long, Wang & Yu, ICCV 2017).

Relaxed codes u = tanh(beta z), with beta raised during training so that tanh(beta z) tends to
sgn(z) (learning by continuation, Algorithm 1), and a weighted maximum likelihood on the
pairwise labels with the adaptive sigmoid sigmoid(alpha <u_i, u_j>) (the model formulation, Sec. 3):

    likelihood = sum over pairs i != j of w_ij (log(1 + exp(alpha u_i . u_j)) - alpha s_ij u_i . u_j) / |S|
    w_ij = |S| / |S1| for similar pairs, |S| / |S0| for dissimilar ones

with S the pairs of the batch, S1 its similar and S0 its dissimilar pairs: similar pairs, rare
among many classes, weigh as much in total as dissimilar ones (the loss is the mean over S1 plus
the mean over S0).

Continuation: beta = sqrt(1 + step // beta_step), ``step`` the optimizer steps taken so far.
This is the schedule of the authors' PyTorch code (thuml/HashNet: beta = (1 + 0.005 iter)^0.5,
updated every 200 iterations, which is sqrt(1 + iter // 200) since 0.005 * 200 = 1), hence
beta_step = 200; swuxyj/DeepHash-pytorch counts it in epochs (sqrt(1 + epoch // 20)).
alpha = 0.1 as in DeepHash-pytorch (thuml's code uses 10 / L, 0.21 at 48 bits).

Choices the paper leaves open: the pairs are those of the batch, an image not paired with itself
(the reference implementations pair the batch with itself, diagonal included); the paper's c_ij
(a finer similarity for multi-label data) is 1, as in both reference implementations.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cbir.deephash.base import HashLoss, pairwise_similarity


class HashNet(HashLoss):
    name = "hashnet"
    defaults = {"alpha": 0.1, "beta_step": 200}

    @property
    def beta(self) -> float:
        """The continuation's current scale of tanh."""
        return math.sqrt(1 + int(self.step) // self.options["beta_step"])

    def terms(self, z, targets):
        u = torch.tanh(self.beta * z)
        inner = self.options["alpha"] * u @ u.T
        similar = pairwise_similarity(targets)
        pairs = ~torch.eye(len(z), dtype=torch.bool, device=z.device)
        n_similar = (similar.bool() & pairs).sum()
        n_dissimilar = pairs.sum() - n_similar
        # clamp: a kind of pair absent from the batch has no weight to divide by, and no term to weigh
        weights = torch.where(similar.bool(), pairs.sum() / n_similar.clamp_min(1), pairs.sum() / n_dissimilar.clamp_min(1))
        per_pair = weights * (F.softplus(inner) - similar * inner)
        likelihood = per_pair.masked_select(pairs).sum() / pairs.sum().clamp_min(1)
        return likelihood, {"likelihood": likelihood}
