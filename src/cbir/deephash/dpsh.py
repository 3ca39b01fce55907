"""DPSH: deep pairwise-supervised hashing (Li, Wang & Kang, "Feature Learning based Deep
Supervised Hashing with Pairwise Labels", IJCAI 2016).

The paper's relaxed objective (Sec. 3): the negative log-likelihood of the pairwise labels under
p(s_ij = 1) = sigmoid(Theta_ij), Theta_ij = u_i . u_j / 2, with u = z the hash layer's outputs
in place of the codes, plus a quantization term pulling u to its code b = sgn(u):

    likelihood    mean over pairs i != j of  log(1 + exp(Theta_ij)) - s_ij Theta_ij
    quantization  mean_{n,l} (u_nl - sgn(u_nl))^2

    loss = likelihood + eta quantization

log(1 + exp(x)) is computed as softplus, which does not overflow for large inner products.

Differences from the paper and its reference implementations (jiangqy/DPSH-pytorch,
swuxyj/DeepHash-pytorch): the pairs are those within the batch, while the references pair each
image of the batch with a memory of every training image's latest output, which needs image
indices the shared training loop does not pass; the paper's sums are means, so that eta does not
depend on the batch size (the references' scale: eta = 0.1 on means).
"""

from __future__ import annotations

import torch.nn.functional as F

from cbir.deephash.base import HashLoss, pair_mean, pairwise_similarity


class DPSH(HashLoss):
    name = "dpsh"
    defaults = {"eta": 0.1}

    def terms(self, z, targets):
        theta = 0.5 * z @ z.T
        similar = pairwise_similarity(targets)
        terms = {
            "likelihood": pair_mean(F.softplus(theta) - similar * theta),
            "quantization": ((z - z.sign()) ** 2).mean(),
        }
        return terms["likelihood"] + self.options["eta"] * terms["quantization"], terms
