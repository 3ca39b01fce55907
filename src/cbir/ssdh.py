"""SSDH: supervised semantics-preserving deep hashing (Yang, Lin & Chen, TPAMI 2018).

A latent layer of L sigmoid units sits between a network's pooled (penultimate) features and its
classifier, so that the classes must be predicted from L nearly binary attributes; the codes are
the activations thresholded at 0.5. The loss, per batch of N images with activations a (N x L):

    cross-entropy(logits, labels)
    + alpha * binarization,  binarization = -mean_{n,l} (a_nl - 0.5)^2   (pushes each a to 0 or 1)
    + beta * balance,        balance      = mean_l (mean_n a_nl - 0.5)^2 (each bit on for half)

Two variants, each a stage function that writes the model, the codes of every image of the split
(a descriptor file, rows in the split's order) and a per-epoch history:

* :func:`train_ssdh` (end to end): the backbone, the latent layer and the classifier are trained
  together on images, by the fine-tuning loop of :mod:`cbir.training` (GPU when present).
* :func:`train_ssdh_head` (head only): latent layer and classifier trained on a backbone's
  cached features (frozen), which costs seconds instead of a fine-tuning.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from cbir.codes import pack_bits
from cbir.io import ROLES, read_descriptors, write_descriptors, write_parquet
from cbir.models import Backbone, build_backbone

log = logging.getLogger(__name__)

#: Loss terms logged per epoch, besides the total.
TERMS = ("classification", "binarization", "balance")


class SSDHHead(nn.Module):
    """features -> L sigmoid activations -> class logits."""

    def __init__(self, in_features: int, n_bits: int, n_classes: int):
        super().__init__()
        self.latent = nn.Linear(in_features, n_bits)
        self.classifier = nn.Linear(n_bits, n_classes)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The sigmoid in float32: under bf16 autocast its values near 0.5 would be too coarse.
        activations = torch.sigmoid(self.latent(features).float())
        return activations, self.classifier(activations)


class SSDHNet(nn.Module):
    """A backbone's trunk followed by an SSDH head; it has what the fine-tuning loop needs of a
    backbone (``arch``, ``head``, ``trunk_parameters``, ``layers``), with the layer ``latent``."""

    def __init__(self, backbone: Backbone, n_bits: int, n_classes: int):
        super().__init__()
        self.arch = backbone.arch
        self.backbone = backbone
        self.head = SSDHHead(backbone.head.in_features, n_bits, n_classes)

    def trunk_parameters(self):
        return self.backbone.trunk_parameters()

    def layers(self, x: torch.Tensor, wanted=("latent", "logits")) -> dict[str, torch.Tensor]:
        out = {"penultimate": self.backbone.layers(x, ("penultimate",))["penultimate"]}
        out["latent"], out["logits"] = self.head(out["penultimate"])
        return {name: out[name] for name in wanted}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x, ("logits",))["logits"]


def ssdh_loss(logits: torch.Tensor, labels: torch.Tensor, activations: torch.Tensor, alpha: float, beta: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The SSDH loss of a batch and its three terms (see the module docstring)."""
    a = activations.float()
    terms = {
        "classification": F.cross_entropy(logits.float(), labels),
        "binarization": -((a - 0.5) ** 2).mean(),
        "balance": ((a.mean(0) - 0.5) ** 2).mean(),
    }
    return terms["classification"] + alpha * terms["binarization"] + beta * terms["balance"], terms


class SSDHObjective:
    """The SSDH loss as an objective of :func:`cbir.training.finetune`."""

    def __init__(self, alpha: float, beta: float):
        self.alpha, self.beta = alpha, beta

    def __call__(self, model: SSDHNet, images: torch.Tensor, labels: torch.Tensor):
        out = model.layers(images, ("latent", "logits"))
        loss, terms = ssdh_loss(out["logits"], labels, out["latent"], self.alpha, self.beta)
        return loss, out["logits"], terms


def binary_codes(activations: np.ndarray) -> np.ndarray:
    """Packed codes (:mod:`cbir.codes`) of latent activations: bit l is set where a_l > 0.5."""
    return pack_bits(np.asarray(activations) > 0.5)


# --------------------------------------------------------------------------------------------
# End to end: backbone, latent layer and classifier fine-tuned on images
# --------------------------------------------------------------------------------------------


def training_recipe(backbone_cfg: dict, ssdh_cfg: dict) -> dict:
    """The end-to-end training's recipe: the backbone's ``finetune``, updated by ``ssdh.finetune``."""
    return {**backbone_cfg["finetune"], **ssdh_cfg.get("finetune", {})}


def train_ssdh(
    manifest_path,
    split_path,
    backbone_cfg: dict,
    ssdh_cfg: dict,
    dataset_kind: str,
    seed: int,
    n_bits: int,
    model_path,
    codes_path,
    history_path,
    weights_path: str | None = None,
    image_cache=None,
) -> pd.DataFrame:
    """Train SSDH end to end on the split's training images; write the model, every image's
    ``n_bits``-bit code and the per-epoch history.

    The network starts from the backbone's configured weights (or ``weights_path``) and trains
    with the backbone's ``finetune`` recipe, updated by ``ssdh_cfg["finetune"]``; ``ssdh_cfg``
    also holds ``alpha`` and ``beta``. Resumable from ``<model_path>.resume`` like fine-tuning.
    """
    from cbir.features import MIRROR_INVARIANT, image_set, load_backbone, split_images, training_sets
    from cbir.training import fingerprint, finetune, resolve_device, run_layers, save_checkpoint, seed_everything

    images = split_images(manifest_path, split_path)
    options = {**training_recipe(backbone_cfg, ssdh_cfg), "head_only": False}
    n_classes = int(images["label"].max()) + 1
    seed_everything(seed)
    backbone, mode = load_backbone(backbone_cfg, dataset_kind, weights_path)
    backbone.replace_head(n_classes)  # unused by SSDH; sized to the data so that the file says how to rebuild it
    net = SSDHNet(backbone, n_bits, n_classes)
    size = backbone_cfg["input_size"]
    train_set, val_set = training_sets(images, options, seed, mode, size, image_cache, manifest_path)
    resume_path = Path(str(model_path) + ".resume")
    run_id = fingerprint("ssdh", backbone_cfg, ssdh_cfg, n_bits, dataset_kind, seed, images.loc[images["train"], "image_id"].tolist(), weights_path)
    log.info("SSDH end to end: %d bits, alpha %g, beta %g", n_bits, ssdh_cfg["alpha"], ssdh_cfg["beta"])
    history = finetune(net, train_set, val_set, options, dataset_kind in MIRROR_INVARIANT, seed, resume_path, run_id, objective=SSDHObjective(ssdh_cfg["alpha"], ssdh_cfg["beta"]))

    device = resolve_device(options["device"])
    batch_size = 1024 if device.type == "cuda" else 256
    activations = run_layers(net, image_set(images, mode, size, image_cache, manifest_path), ("latent",), batch_size, options["workers"], device, progress=True, resident_gib=options.get("resident_gib"))["latent"]
    save_checkpoint(
        {"arch": net.arch, "n_bits": n_bits, "n_classes": n_classes, "input_mode": mode, "input_size": size, "state_dict": net.state_dict()},
        Path(model_path),
    )
    _write_codes(codes_path, images, activations, n_bits)
    write_parquet(history, history_path)
    resume_path.unlink(missing_ok=True)
    return history


def load_ssdh(path) -> SSDHNet:
    """A network written by :func:`train_ssdh` (loaded with ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SSDH model not found: {path}")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        backbone = build_backbone(saved["arch"], "none", in_channels=len(saved["input_mode"]), n_classes=saved["n_classes"])
        net = SSDHNet(backbone, saved["n_bits"], saved["n_classes"])
        net.load_state_dict(saved["state_dict"])
    except (KeyError, RuntimeError, ValueError, TypeError) as err:
        raise ValueError(f"{path} is not an SSDH model written by train_ssdh: {err.__class__.__name__}: {err}") from err
    return net


def _write_codes(codes_path, index: pd.DataFrame, activations: np.ndarray, n_bits: int) -> None:
    codes = binary_codes(activations)
    write_descriptors(codes_path, index[["image_id", "label", *ROLES]], codes, n_bits=n_bits)
    log.info("wrote %d %d-bit codes to %s; %.1f%% of their bits set", len(codes), n_bits, codes_path, 100 * (activations > 0.5).mean())


# --------------------------------------------------------------------------------------------
# Head only: latent layer and classifier on frozen, cached features
# --------------------------------------------------------------------------------------------


def fit_ssdh_head(features: np.ndarray, labels: np.ndarray, n_bits: int, n_classes: int, options: dict, seed: int, device: torch.device | str = "cpu") -> tuple[SSDHHead, pd.DataFrame]:
    """Train an SSDH head on (features, labels) by SGD with momentum and a cosine schedule.

    ``options``: alpha, beta, epochs, batch_size, lr, momentum, weight_decay. Features are
    standardised for training (their scales vary by orders of magnitude between backbones) and
    the standardisation is folded into the latent layer, so the head takes raw features.
    """
    device = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x = torch.tensor(features, dtype=torch.float32)  # a copy: features read from Parquet are read-only
    mean, scale = x.mean(0), x.std(0).clamp_min(1e-6)
    x = ((x - mean) / scale).to(device)
    y = torch.as_tensor(labels, dtype=torch.int64).to(device)
    head = SSDHHead(x.shape[1], n_bits, n_classes).to(device)
    optimizer = torch.optim.SGD(head.parameters(), lr=options["lr"], momentum=options["momentum"], weight_decay=options["weight_decay"])
    batch_size = options["batch_size"]
    steps = max(1, options["epochs"] * (len(x) // batch_size or 1))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step / steps, 1.0))))
    history = []
    for epoch in range(1, options["epochs"] + 1):
        started = time.perf_counter()
        order = torch.randperm(len(x), generator=generator).to(device)
        totals = torch.zeros(5, device=device)  # loss, its three terms, correct: summed on the device
        n_batches = len(x) // batch_size or 1  # whole batches: the balance term is a batch statistic
        for start in range(0, n_batches * batch_size, batch_size):
            batch = order[start : start + batch_size]
            activations, logits = head(x[batch])
            loss, terms = ssdh_loss(logits, y[batch], activations, options["alpha"], options["beta"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            correct = (logits.detach().argmax(1) == y[batch]).sum()
            totals += len(batch) * torch.stack([loss.detach(), *(terms[name].detach() for name in TERMS), correct / len(batch)])
        loss_sum, *term_sums, correct = (totals / min(len(x), n_batches * batch_size)).tolist()
        row = {"epoch": epoch, "train_loss": loss_sum, **{f"train_{name}": v for name, v in zip(TERMS, term_sums)}, "train_accuracy": correct, "lr": scheduler.get_last_lr()[0], "seconds": time.perf_counter() - started}
        history.append(row)
        log.info("epoch %d/%d  loss %.4f  classification %.4f  binarization %.4f  balance %.5f  acc %.2f%%", epoch, options["epochs"], loss_sum, *term_sums, 100 * correct)
    head = head.cpu()
    with torch.no_grad():  # fold the standardisation in: latent(W (x - m) / s + b) = (W / s) x + b - (W / s) m
        head.latent.weight.div_(scale)
        head.latent.bias.sub_(head.latent.weight @ mean)
    return head, pd.DataFrame(history)


@torch.no_grad()
def head_activations(head: SSDHHead, features: np.ndarray, batch_size: int = 65536) -> np.ndarray:
    """The latent activations of raw ``features``, float32 (N, L)."""
    head.eval()
    x = torch.tensor(features, dtype=torch.float32)  # a copy: features read from Parquet are read-only
    return torch.cat([head(x[i : i + batch_size])[0] for i in range(0, len(x), batch_size)]).numpy()


def train_ssdh_head(features_path, ssdh_cfg: dict, seed: int, n_bits: int, model_path, codes_path, history_path) -> pd.DataFrame:
    """Train an SSDH head on a split's cached features (a descriptor file); write it (a state dict
    with its sizes), every image's ``n_bits``-bit code and the per-epoch history.

    ``ssdh_cfg``: ``alpha``, ``beta`` and ``head_only`` (epochs, batch_size, lr, momentum,
    weight_decay, device)."""
    from cbir.training import resolve_device, save_checkpoint

    features = read_descriptors(features_path)
    if features.is_binary:
        raise ValueError(f"{features_path} holds binary codes, not features")
    train = features.subset("train")
    if not len(train):
        raise ValueError(f"{features_path} has no training rows")
    options = {**ssdh_cfg["head_only"], "alpha": ssdh_cfg["alpha"], "beta": ssdh_cfg["beta"]}
    device = resolve_device(options.get("device", "auto"))
    n_classes = int(features.label.max()) + 1
    log.info("SSDH head only: %d bits, alpha %g, beta %g, on %d cached %d-d features, on %s", n_bits, options["alpha"], options["beta"], len(train), train.values.shape[1], device)
    head, history = fit_ssdh_head(train.values, train.label, n_bits, n_classes, options, seed, device)
    save_checkpoint({"n_bits": n_bits, "in_features": head.latent.in_features, "n_classes": n_classes, "state_dict": head.state_dict()}, Path(model_path))
    _write_codes(codes_path, features.index_frame(), head_activations(head, features.values), n_bits)
    write_parquet(history, history_path)
    return history


def load_ssdh_head(path) -> SSDHHead:
    """A head written by :func:`train_ssdh_head` (loaded with ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SSDH head not found: {path}")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        head = SSDHHead(saved["in_features"], saved["n_bits"], saved["n_classes"])
        head.load_state_dict(saved["state_dict"])
    except (KeyError, RuntimeError, TypeError) as err:
        raise ValueError(f"{path} is not an SSDH head written by train_ssdh_head: {err.__class__.__name__}: {err}") from err
    return head
