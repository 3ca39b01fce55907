"""Deep hashing losses (cbir.deephash): each against its paper's formula written out in numpy (loops
over pairs), the gradient tricks, CSQ's hash centers, options, and a few steps on toy data."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from cbir.deephash import LOSSES, make_loss
from cbir.deephash.csq import CSQ
from cbir.deephash.dpsh import DPSH
from cbir.deephash.dsh import DSH
from cbir.deephash.greedyhash import GreedyHash
from cbir.deephash.hashnet import HashNet
from cbir.deephash.ssdh import SSDH

Z = np.random.default_rng(7).normal(0, 1.5, (5, 6)).astype(np.float32)
ONE_HOT = np.eye(3, dtype=np.float32)[[0, 1, 0, 2, 1]]
MULTI_HOT = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 1, 1]], dtype=np.float32)
TARGETS = pytest.mark.parametrize("targets", [ONE_HOT, MULTI_HOT], ids=["one-hot", "multi-hot"])


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny problems: on a shared, busy machine torch's threads only wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def value(loss, z=Z, targets=ONE_HOT) -> float:
    return loss(torch.tensor(z), torch.tensor(targets))[0].item()


def pairs(n):
    return [(i, j) for i in range(n) for j in range(n) if i != j]


def similar(targets, i, j) -> float:
    return float(targets[i] @ targets[j] > 0)


def softplus(x):
    return np.logaddexp(0.0, x)


def cross_entropy(logits, targets):
    """Softmax cross-entropy of one-hot targets, or the mean binary cross-entropy of multi-hot ones."""
    if (targets.sum(1) == 1).all():
        log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        return -np.mean([log_p[n, targets[n].argmax()] for n in range(len(logits))])
    p = 1 / (1 + np.exp(-logits))
    return -np.mean(targets * np.log(p) + (1 - targets) * np.log(1 - p))


def classifier_of(loss):
    weight = loss.classifier.weight.detach().double().numpy()
    bias = loss.classifier.bias.detach().double().numpy() if loss.classifier.bias is not None else 0
    return lambda h: h @ weight.T + bias


# --------------------------------------------------------------------------------------------
# Values against the papers' formulas
# --------------------------------------------------------------------------------------------


@TARGETS
def test_ssdh(targets):
    torch.manual_seed(0)
    loss = SSDH(6, 3, alpha=0.5, beta=2.0)
    loss.multi_label = targets is not ONE_HOT  # as the trainer sets it for the dataset
    a = 1 / (1 + np.exp(-Z.astype(np.float64)))
    expected = cross_entropy(classifier_of(loss)(a), targets) - 0.5 * np.mean((a - 0.5) ** 2) + 2.0 * np.mean((a.mean(0) - 0.5) ** 2)
    assert value(loss, targets=targets) == pytest.approx(expected, rel=1e-5)


@TARGETS
def test_dpsh(targets):
    n = len(Z)
    likelihood = np.mean([softplus(0.5 * Z[i] @ Z[j]) - similar(targets, i, j) * 0.5 * Z[i] @ Z[j] for i, j in pairs(n)])
    quantization = np.mean([(Z[i, l] - np.sign(Z[i, l])) ** 2 for i in range(n) for l in range(Z.shape[1])])
    assert value(DPSH(6, 3, eta=0.3), targets=targets) == pytest.approx(likelihood + 0.3 * quantization, rel=1e-5)


def test_dpsh_is_stable_for_large_inner_products():
    big = Z * 30  # inner products of thousands: exp() would overflow float32
    expected = np.mean([softplus(0.5 * big[i] @ big[j]) - similar(ONE_HOT, i, j) * 0.5 * big[i] @ big[j] for i, j in pairs(len(big))])
    expected += 0.1 * np.mean((big - np.sign(big)) ** 2)
    assert value(DPSH(6, 3), big) == pytest.approx(expected, rel=1e-4)


def hashnet_reference(z, targets, alpha, beta):
    u = np.tanh(beta * z.astype(np.float64))
    all_pairs = pairs(len(z))
    n_similar = sum(similar(targets, i, j) for i, j in all_pairs)
    n_dissimilar = len(all_pairs) - n_similar
    total = 0.0
    for i, j in all_pairs:
        s = similar(targets, i, j)
        weight = len(all_pairs) / n_similar if s else len(all_pairs) / n_dissimilar
        inner = alpha * u[i] @ u[j]
        total += weight * (softplus(inner) - s * inner)
    return total / len(all_pairs)


@TARGETS
def test_hashnet(targets):
    assert value(HashNet(6, 3, alpha=0.7), targets=targets) == pytest.approx(hashnet_reference(Z, targets, 0.7, 1.0), rel=1e-5)


def test_hashnet_beta_grows_with_the_training_steps():
    loss = HashNet(6, 3, alpha=0.7, beta_step=10)
    for steps, beta in ((9, 1.0), (10, math.sqrt(2)), (35, 2.0)):
        loss.step.fill_(steps)
        assert loss.beta == pytest.approx(beta)
        assert value(loss.eval()) == pytest.approx(hashnet_reference(Z, ONE_HOT, 0.7, beta), rel=1e-5)
    loss.eval()(torch.tensor(Z), torch.tensor(ONE_HOT))
    assert loss.step.item() == 35  # evaluation takes no step
    loss.train()(torch.tensor(Z), torch.tensor(ONE_HOT))
    assert loss.step.item() == 36
    resumed = HashNet(6, 3, alpha=0.7, beta_step=10)
    resumed.load_state_dict(loss.state_dict())  # the step count is a buffer: a resumed training goes on with its beta
    assert resumed.beta == pytest.approx(2.0)


def dsh_reference(z, targets, margin, alpha):
    contrastive = []
    for i, j in pairs(len(z)):
        distance = np.sum((z[i] - z[j]) ** 2)
        s = similar(targets, i, j)
        contrastive.append(0.5 * s * distance + 0.5 * (1 - s) * max(margin - distance, 0))
    return np.mean(contrastive) + alpha * np.mean(np.abs(np.abs(z) - 1))


@TARGETS
def test_dsh(targets):
    z = Z / 2  # closer codes, so that some dissimilar pairs fall within the margin m = 2L = 12
    assert any(np.sum((z[i] - z[j]) ** 2) < 12 for i, j in pairs(len(z)) if not similar(targets, i, j))
    assert value(DSH(6, 3), z, targets) == pytest.approx(dsh_reference(z, targets, 12, 0.01), rel=1e-5)
    assert value(DSH(6, 3, margin=1.5, alpha=0.5), z, targets) == pytest.approx(dsh_reference(z, targets, 9, 0.5), rel=1e-5)


@TARGETS
def test_greedyhash(targets):
    torch.manual_seed(0)
    loss = GreedyHash(6, 3, alpha=0.5)
    loss.multi_label = targets is not ONE_HOT  # as the trainer sets it for the dataset
    expected = cross_entropy(classifier_of(loss)(np.sign(Z.astype(np.float64))), targets) + 0.5 * np.mean(np.abs(np.abs(Z) - 1) ** 3)
    assert value(loss, targets=targets) == pytest.approx(expected, rel=1e-5)
    scores = loss.logits(torch.tensor(Z)).detach().numpy()
    assert np.allclose(scores, classifier_of(loss)(np.sign(Z)), atol=1e-6)  # scores of the binary codes


def test_greedyhash_gradient_goes_straight_through_the_sign():
    torch.manual_seed(0)
    loss = GreedyHash(6, 3, alpha=0.5)
    z = torch.tensor(Z, requires_grad=True)
    total, _ = loss(z, torch.tensor(ONE_HOT))
    total.backward()
    # The classification term's gradient at the code h = sgn(z), handed to z as if sgn were the identity...
    h = torch.tensor(np.sign(Z), requires_grad=True)
    torch.nn.functional.cross_entropy(h @ loss.classifier.weight.detach().T, torch.tensor(ONE_HOT.argmax(1))).backward()
    # ...plus the penalty's: d/dz | |z| - 1 |^3 = 3 (|z| - 1)^2 sgn(|z| - 1) sgn(z), over the N L outputs.
    penalty = 3 * (np.abs(Z) - 1) ** 2 * np.sign(np.abs(Z) - 1) * np.sign(Z) / Z.size
    assert np.allclose(z.grad.numpy(), h.grad.numpy() + 0.5 * penalty, atol=1e-6)
    assert (h.grad != 0).any()


def csq_reference(z, targets, centers, tie_break, lambda_q):
    u = np.tanh(z.astype(np.float64))
    total = 0.0
    for n in range(len(z)):
        summed = sum(centers[c] for c in range(len(targets[n])) if targets[n, c])
        centre = np.where(summed == 0, tie_break, np.sign(summed))
        p, t = (u[n] + 1) / 2, (centre + 1) / 2
        total += np.sum(-(t * np.log(p) + (1 - t) * np.log(1 - p)))
    return total / u.size + lambda_q * np.mean((np.abs(u) - 1) ** 2)


@TARGETS
@pytest.mark.parametrize("n_bits", [8, 6], ids=["hadamard", "bernoulli"])
def test_csq(targets, n_bits):
    loss = CSQ(n_bits, 3, seed=3, lambda_q=0.5)
    z = np.random.default_rng(1).normal(0, 1.5, (5, n_bits)).astype(np.float32)
    centers, tie_break = loss.centers.numpy(), loss.tie_break.numpy()
    assert value(loss, z, targets) == pytest.approx(csq_reference(z, targets, centers, tie_break, 0.5), rel=1e-5)


# --------------------------------------------------------------------------------------------
# CSQ's hash centers
# --------------------------------------------------------------------------------------------


def distances(centers):
    return [int(np.sum(centers[i] != centers[j])) for i in range(len(centers)) for j in range(i + 1, len(centers))]


def test_csq_hadamard_centers():
    centers = CSQ(8, 5).centers.numpy()
    assert set(np.unique(centers)) == {-1, 1}
    assert np.array_equal(centers @ centers.T, 8 * np.eye(5))  # orthogonal rows
    assert set(distances(centers)) == {4}
    with_negations = CSQ(4, 7).centers.numpy()  # 2L >= C > L: the rows, then their negations
    assert np.array_equal(with_negations[4:], -with_negations[:3])
    assert set(distances(with_negations)) == {2, 4}


@pytest.mark.parametrize("n_bits, n_classes", [(12, 4), (64, 130)], ids=["not-a-power-of-2", "2L<C"])
def test_csq_bernoulli_centers(n_bits, n_classes):
    centers = CSQ(n_bits, n_classes, seed=5).centers.numpy()
    assert centers.shape == (n_classes, n_bits) and set(np.unique(centers)) == {-1, 1}
    assert np.array_equal(centers, CSQ(n_bits, n_classes, seed=5).centers.numpy())  # deterministic for a seed
    assert not np.array_equal(centers, CSQ(n_bits, n_classes, seed=6).centers.numpy())
    assert min(distances(centers)) > n_bits / 4 and np.mean(distances(centers)) >= n_bits / 2


def test_csq_centers_too_crowded_to_separate_keep_the_best_draw(caplog):
    with caplog.at_level(logging.WARNING, logger="cbir.deephash.csq"):
        centers = CSQ(3, 10).centers.numpy()  # 10 centers among the 8 points of {-1, 1}^3
    assert centers.shape == (10, 3) and set(np.unique(centers)) == {-1, 1}
    assert "keeping the best" in caplog.text


def test_csq_multi_label_center_is_the_sign_of_the_labels_centers():
    loss = CSQ(8, 3, seed=2)
    centers, tie_break = loss.centers.numpy(), loss.tie_break.numpy()
    targets = np.array([[1, 1, 0], [1, 1, 1], [0, 0, 1]], dtype=np.float32)
    got = loss.target_centers(torch.tensor(targets)).numpy()
    for n, labels in enumerate(targets):
        for bit in range(8):
            summed = sum(centers[c, bit] for c in range(3) if labels[c])
            assert got[n, bit] == (tie_break[bit] if summed == 0 else np.sign(summed))
    assert (centers[0] + centers[1] == 0).sum() == 4  # two Hadamard rows cancel on half their bits: those are the ties
    assert np.array_equal(got[2], centers[2])
    assert np.array_equal(tie_break, CSQ(8, 3, seed=2).tie_break.numpy())
    assert {"centers", "tie_break", "step"} <= set(loss.state_dict())


# --------------------------------------------------------------------------------------------
# Options, registry, edge cases
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_unknown_option_is_named(name):
    with pytest.raises(ValueError, match="bogus"):
        make_loss(name, 8, 3, bogus=1)
    assert make_loss(name, 8, 3).options == LOSSES[name].defaults


def test_unknown_method_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match="nope.*csq, dpsh, dsh, greedyhash, hashnet, ssdh"):
        make_loss("nope", 8, 3)


@pytest.mark.parametrize("name, pairwise", [("dpsh", "likelihood"), ("hashnet", "likelihood"), ("dsh", "contrastive")])
def test_pairwise_losses_on_a_batch_of_one(name, pairwise):
    z = torch.tensor(Z[:1], requires_grad=True)
    total, terms = make_loss(name, 6, 3)(z, torch.tensor(ONE_HOT[:1]))
    total.backward()
    assert terms[pairwise].item() == 0 and torch.isfinite(z.grad).all()


def test_hashnet_on_a_batch_without_dissimilar_pairs():
    one_class = np.eye(3, dtype=np.float32)[[1] * 5]
    assert value(HashNet(6, 3), targets=one_class) == pytest.approx(hashnet_reference(Z, one_class, 0.1, 1.0), rel=1e-5)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_losses_are_float32_under_bf16_autocast(name):
    torch.manual_seed(0)
    loss = make_loss(name, 6, 3)
    exact = value(loss.eval())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert value(loss) == pytest.approx(exact, rel=1e-6)


# --------------------------------------------------------------------------------------------
# Training on toy data
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_a_few_steps_lower_the_loss_and_separate_the_classes(name):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    labels = np.arange(48) % 3
    features = torch.tensor(rng.normal(0, 3, (3, 16))[labels] + rng.normal(0, 0.5, (48, 16)), dtype=torch.float32)
    targets = torch.eye(3)[labels]
    layer, loss = torch.nn.Linear(16, 8), make_loss(name, 8, 3)
    optimizer = torch.optim.Adam([*layer.parameters(), *loss.parameters()], lr=0.02)
    history = []
    for _ in range(150):
        total, _ = loss(layer(features), targets)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(total.item())
    assert np.mean(history[-10:]) < np.mean(history[:10])
    codes = (layer(features) > 0).numpy()
    hamming = (codes[:, None] != codes[None]).sum(-1)
    same = labels[:, None] == labels[None]
    assert hamming[same].max() < hamming[~same].min()  # every image nearer to its class than to any other


def test_a_classifier_s_loss_is_decided_for_the_dataset_not_the_batch():
    """On multi-label data a batch whose images have one label each still gets the multi-label
    (per-class binary) loss, so that every batch of a training is on the same scale."""
    torch.manual_seed(0)
    loss = SSDH(6, 3, alpha=0.0, beta=0.0)
    single = value(loss)
    loss.multi_label = True
    p = 1 / (1 + np.exp(-classifier_of(loss)(1 / (1 + np.exp(-Z.astype(np.float64))))))
    binary = -np.mean(ONE_HOT * np.log(p) + (1 - ONE_HOT) * np.log(1 - p))
    assert value(loss) == pytest.approx(binary, rel=1e-5) and value(loss) != pytest.approx(single)
