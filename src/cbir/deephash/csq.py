"""CSQ: central similarity quantization (Yuan et al., "Central Similarity Quantization for
Efficient Image and Video Retrieval", CVPR 2020).

Each class has a hash center c in {-1, +1}^L, far from the others in Hamming distance; each
image's relaxed code u = tanh(z) is pulled to its center, bit by bit, by a binary cross-entropy
between (u + 1) / 2 and (c + 1) / 2 (the central similarity loss), plus a quantization term:

    central       mean_{n,l} BCE((u_nl + 1) / 2, (c_nl + 1) / 2)
    quantization  mean_{n,l} (|u_nl| - 1)^2

    loss = central + lambda_q quantization

(u + 1) / 2 = sigmoid(2 z), so the first term is computed as BCE with logits 2 z, which stays
finite where tanh saturates.

Hash centers (the paper's Algorithm 1), drawn once at construction from ``seed`` and kept as a
buffer: when L is a power of 2 and 2L >= C, the rows of the L x L Hadamard matrix and their
negations (pairwise distance L/2, or L between a row and its negation); otherwise C centers of
independent Bernoulli(0.5) bits, re-drawn until, as in swuxyj/DeepHash-pytorch, the smallest
pairwise distance exceeds L/4 and the mean is at least L/2 (at most :data:`CENTER_DRAWS` draws;
for short codes and many classes no draw may pass, and the best one is kept, with a warning).

An image with several labels is pulled to the sign of the sum (equivalently, of the mean) of its
labels' centers; a bit where they cancel takes the value of a fixed random tie-break vector, as in
DeepHash-pytorch (a buffer too, so that the target of an image never changes during training).

Differences from the paper: its quantization term is log cosh(|u| - 1); this is the squared form
of DeepHash-pytorch, with its weight lambda = 1e-4. DeepHash-pytorch draws balanced random centers
(exactly L/2 bits of each set) and keeps the Hadamard rows for the first 2L classes; these are
Bernoulli, all of them, as in the paper's Algorithm 1.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from cbir.deephash.base import HashLoss

log = logging.getLogger(__name__)

#: Draws of random centers before settling for the best (the reference makes 20).
CENTER_DRAWS = 100


def hadamard(n: int) -> np.ndarray:
    """The n x n Hadamard matrix of Sylvester's construction (n a power of 2), as scipy's."""
    matrix = np.ones((1, 1), dtype=np.int64)
    while len(matrix) < n:
        matrix = np.block([[matrix, matrix], [matrix, -matrix]])
    return matrix


def hamming_distances(centers: np.ndarray) -> np.ndarray:
    """The Hamming distances of every pair of distinct +-1 rows (a flat array, i < j)."""
    distances = (centers.shape[1] - centers @ centers.T) // 2
    return distances[np.triu_indices(len(centers), k=1)]


def well_separated(centers: np.ndarray) -> bool:
    """The reference implementation's condition: min distance > L/4 and mean distance >= L/2."""
    distances = hamming_distances(centers)
    n_bits = centers.shape[1]
    return not len(distances) or (distances.min() > n_bits / 4 and distances.mean() >= n_bits / 2)


def hash_centers(n_bits: int, n_classes: int, seed: int) -> np.ndarray:
    """(C, L) hash centers of +-1 (int64), by the paper's Algorithm 1; deterministic for a seed."""
    if n_bits & (n_bits - 1) == 0 and 2 * n_bits >= n_classes:
        rows = hadamard(n_bits)
        return np.concatenate([rows, -rows])[:n_classes]
    rng = np.random.default_rng(seed)
    best, best_score = None, None
    for _ in range(CENTER_DRAWS):
        centers = 2 * rng.integers(0, 2, size=(n_classes, n_bits)) - 1
        if well_separated(centers):
            return centers
        distances = hamming_distances(centers)
        score = (distances.min(), distances.mean())
        if best is None or score > best_score:
            best, best_score = centers, score
    message = "CSQ: none of %d draws of %d random %d-bit centers has min distance > %g and mean >= %g; keeping the best (min %d, mean %.2f)"
    log.warning(message, CENTER_DRAWS, n_classes, n_bits, n_bits / 4, n_bits / 2, *best_score)
    return best


class CSQ(HashLoss):
    name = "csq"
    defaults = {"lambda_q": 1e-4}

    def __init__(self, n_bits: int, n_classes: int, seed: int = 0, **options):
        super().__init__(n_bits, n_classes, seed, **options)
        self.register_buffer("centers", torch.tensor(hash_centers(self.n_bits, self.n_classes, self.seed), dtype=torch.float32))
        # From a generator of its own: the centers stay those of hash_centers(seed) alone.
        tie_break = 2 * np.random.default_rng([self.seed, 1]).integers(0, 2, size=self.n_bits) - 1
        self.register_buffer("tie_break", torch.tensor(tie_break, dtype=torch.float32))

    def target_centers(self, targets: torch.Tensor) -> torch.Tensor:
        """Each image's center: its label's, or the sign of the sum of its labels' (ties broken by ``tie_break``)."""
        summed = targets @ self.centers
        return torch.where(summed == 0, self.tie_break, summed.sign())

    def terms(self, z, targets):
        centers = self.target_centers(targets)
        terms = {
            "central": F.binary_cross_entropy_with_logits(2 * z, (centers + 1) / 2),
            "quantization": ((torch.tanh(z).abs() - 1) ** 2).mean(),
        }
        return terms["central"] + self.options["lambda_q"] * terms["quantization"], terms
