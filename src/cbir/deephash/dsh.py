"""DSH: deep supervised hashing (Liu, Wang, Shan & Chen, "Deep Supervised Hashing for Fast Image
Retrieval", CVPR 2016).

A contrastive loss on the relaxed codes u = z (the hash layer's real outputs) of the pairs of the
batch, plus a regulariser pulling each output to +-1 (the paper's relaxed pairwise loss, Sec. 3):

    contrastive  mean over pairs i != j of  1/2 s_ij ||u_i - u_j||^2 + 1/2 (1 - s_ij) max(m - ||u_i - u_j||^2, 0)
    regulariser  mean_{n,l} | |u_nl| - 1 |

    loss = contrastive + alpha regulariser

with m = margin * L: the paper sets m = 2k for k-bit codes (margin = 2), and alpha = 0.01.
(swuxyj/DeepHash-pytorch uses alpha = 0.1.)

Choices the paper leaves open: the paper sums the regulariser of both images over each pair,
here (as in the reference implementations) it is a mean over the batch's outputs, so that alpha
does not depend on the batch size; the pairs are those within the batch (the paper generates
them online from each mini-batch; the reference implementations pair it with a memory of every
training image's output, which needs image indices the shared loop does not pass).
"""

from __future__ import annotations

from cbir.deephash.base import HashLoss, pair_mean, pairwise_similarity


class DSH(HashLoss):
    name = "dsh"
    defaults = {"margin": 2.0, "alpha": 0.01}

    def terms(self, z, targets):
        # |zi|^2 + |zj|^2 - 2 zi.zj: no (N, N, L) difference tensor, and no square root (cdist's has no gradient at 0)
        norms = (z**2).sum(1)
        distance = (norms[:, None] + norms[None] - 2 * z @ z.T).clamp_min(0)
        similar = pairwise_similarity(targets)
        margin = self.options["margin"] * self.n_bits
        per_pair = 0.5 * similar * distance + 0.5 * (1 - similar) * (margin - distance).clamp_min(0)
        terms = {"contrastive": pair_mean(per_pair), "regulariser": (z.abs() - 1).abs().mean()}
        return terms["contrastive"] + self.options["alpha"] * terms["regulariser"], terms
