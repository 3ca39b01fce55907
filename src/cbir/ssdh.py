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
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from cbir.codes import MAX_BITS, pack_bits
from cbir.io import ROLES, read_descriptors, write_descriptors, write_parquet
from cbir.models import Backbone, build_backbone, load_torch_file

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


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the gradient multiplied by ``scale`` on the way back."""

    @staticmethod
    def forward(ctx, x, scale: float):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


class SSDHNet(nn.Module):
    """A backbone's trunk followed by one SSDH head per code length in ``bits``; it has what the
    fine-tuning loop needs of a backbone (``arch``, ``head``, ``trunk_parameters``, ``layers``).

    Layers: ``latent/<L>`` and ``logits/<L>`` per head; ``latent`` and ``logits`` are those of the
    shortest code (a network of one code length has just those). With several heads (code lengths
    trained together) each head gets the gradient of its own loss and the shared trunk the mean
    of the heads' gradients, so that the sum of the losses trains each head as if it were alone
    and the trunk at the pace of one.
    """

    def __init__(self, backbone: Backbone, bits: int | Sequence[int], n_classes: int):
        super().__init__()
        self.arch = backbone.arch
        self.backbone = backbone
        self.bits = tuple(sorted({int(bits)} if isinstance(bits, (int, np.integer)) else {int(b) for b in bits}))
        if not self.bits:
            raise ValueError("SSDH needs at least one code length")
        self.heads = nn.ModuleDict({str(b): SSDHHead(backbone.head.in_features, b, n_classes) for b in self.bits})

    @property
    def head(self) -> nn.ModuleDict:
        return self.heads

    def trunk_parameters(self):
        return self.backbone.trunk_parameters()

    def layers(self, x: torch.Tensor, wanted=("latent", "logits")) -> dict[str, torch.Tensor]:
        shared = self.backbone.layers(x, ("penultimate",))["penultimate"]
        if len(self.bits) > 1 and shared.requires_grad:
            shared = _ScaleGradient.apply(shared, 1 / len(self.bits))
        out = {"penultimate": shared}
        for b in self.bits:
            out[f"latent/{b}"], out[f"logits/{b}"] = self.heads[str(b)](shared)
        out["latent"], out["logits"] = out[f"latent/{self.bits[0]}"], out[f"logits/{self.bits[0]}"]
        return {name: out[name] for name in wanted}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x, ("logits",))["logits"]

    def single(self, n_bits: int) -> "SSDHNet":
        """The network of one code length: the trunk (shared, not copied) and that head."""
        net = SSDHNet(self.backbone, n_bits, self.heads[str(n_bits)].classifier.out_features)
        net.heads[str(n_bits)] = self.heads[str(n_bits)]
        return net


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
    """The SSDH loss as an objective of :func:`cbir.training.finetune`: summed over the
    network's heads; with several, each head's terms and accuracy are logged as ``<term>_<L>``."""

    def __init__(self, alpha: float, beta: float):
        self.alpha, self.beta = alpha, beta

    def __call__(self, model: SSDHNet, images: torch.Tensor, labels: torch.Tensor):
        out = model.layers(images, [f"{layer}/{b}" for b in model.bits for layer in ("latent", "logits")])
        total, logged = 0, {}
        for b in model.bits:
            loss, terms = ssdh_loss(out[f"logits/{b}"], labels, out[f"latent/{b}"], self.alpha, self.beta)
            total = total + loss
            if len(model.bits) == 1:
                logged = terms
            else:
                terms["accuracy"] = (out[f"logits/{b}"].detach().argmax(1) == labels).float().mean()
                logged.update({f"{name}_{b}": value for name, value in terms.items()})
        return total, out[f"logits/{model.bits[0]}"], logged


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
    outputs: dict[int, dict],
    weights_path: str | None = None,
    image_cache=None,
) -> pd.DataFrame:
    """Train SSDH end to end on the split's training images, one head per code length of
    ``outputs`` (``{n_bits: {"model", "codes", "history"}: path}``), all on one trunk; write each
    length's network, every image's code and the per-epoch history. Returns the joint history.

    The network starts from the backbone's configured weights (or ``weights_path``) and trains
    with the backbone's ``finetune`` recipe, updated by ``ssdh_cfg["finetune"]``; ``ssdh_cfg``
    also holds ``alpha`` and ``beta``. Several lengths share every pass of the trunk
    (:class:`SSDHNet`); one length is the paper's training. Resumable like fine-tuning.
    """
    from cbir.features import MIRROR_INVARIANT, image_set, load_backbone, split_images, training_sets
    from cbir.training import fingerprint, finetune, resolve_device, run_layers, save_checkpoint, seed_everything

    bits = sorted(outputs)
    images = split_images(manifest_path, split_path)
    options = {**training_recipe(backbone_cfg, ssdh_cfg), "head_only": False}
    n_classes = int(images["label"].max()) + 1
    seed_everything(seed)
    backbone, mode = load_backbone(backbone_cfg, dataset_kind, weights_path)
    backbone.replace_head(n_classes)  # unused by SSDH; sized to the data so that the file says how to rebuild it
    net = SSDHNet(backbone, bits, n_classes)
    size = backbone_cfg["input_size"]
    train_set, val_set = training_sets(images, options, seed, mode, size, image_cache, manifest_path)
    resume_path = Path(str(outputs[bits[0]]["model"]) + ".resume")
    run_id = fingerprint("ssdh", backbone_cfg, ssdh_cfg, bits, dataset_kind, seed, images.loc[images["train"], "image_id"].tolist(), weights_path)
    log.info("SSDH end to end: %s bits on one trunk, alpha %g, beta %g", "/".join(map(str, bits)), ssdh_cfg["alpha"], ssdh_cfg["beta"])
    history = finetune(net, train_set, val_set, options, dataset_kind in MIRROR_INVARIANT, seed, resume_path, run_id, objective=SSDHObjective(ssdh_cfg["alpha"], ssdh_cfg["beta"]))

    device = resolve_device(options["device"])
    batch_size = 1024 if device.type == "cuda" else 256
    latents = [f"latent/{b}" for b in bits]
    activations = run_layers(net, image_set(images, mode, size, image_cache, manifest_path), latents, batch_size, options["workers"], device, progress=True, resident_gib=options.get("resident_gib"), precision=options.get("precision", "auto"))
    for b in bits:
        save_checkpoint(
            {"arch": net.arch, "n_bits": b, "n_classes": n_classes, "input_mode": mode, "input_size": size, "state_dict": net.single(b).state_dict()},
            Path(outputs[b]["model"]),
        )
        _write_codes(outputs[b]["codes"], images, activations[f"latent/{b}"], b)
        write_parquet(_history_of(history, b, len(bits)), outputs[b]["history"])
    resume_path.unlink(missing_ok=True)
    return history


def _history_of(history: pd.DataFrame, n_bits: int, n_heads: int) -> pd.DataFrame:
    """One code length's view of a joint history: its own terms and training accuracy under the
    usual names (``train_loss`` stays the heads' sum; validation is the shortest code's)."""
    if n_heads == 1:
        return history
    own = {f"train_{name}_{n_bits}": f"train_{name}" for name in (*TERMS, "accuracy")}
    others = [c for c in history.columns if c.startswith("train_") and c not in own and c.rsplit("_", 1)[-1].isdigit()]
    return history.drop(columns=["train_accuracy", *others]).rename(columns=own)


def _check_sizes(saved, path, what: str, sizes: dict[str, int]) -> dict:
    """The saved dict of a model file, its sizes checked to be integers in their ranges."""
    if not isinstance(saved, dict):
        raise ValueError(f"{path} is not an {what}: it holds a {type(saved).__name__}")
    for key, limit in sizes.items():
        value = saved.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
            raise ValueError(f"{path} is not an {what}: {key} is {value!r}, expected an integer from 1 to {limit}")
    return saved


def load_ssdh(path) -> SSDHNet:
    """A network written by :func:`train_ssdh` (loaded with ``weights_only=True``)."""
    saved = _check_sizes(load_torch_file(path, "SSDH model"), path, "SSDH model", {"n_bits": MAX_BITS, "n_classes": 100_000})
    if saved.get("input_mode") not in ("L", "RGB"):
        raise ValueError(f"{path} is not an SSDH model: input_mode is {saved.get('input_mode')!r}")
    try:
        backbone = build_backbone(saved["arch"], "none", in_channels=len(saved["input_mode"]), n_classes=saved["n_classes"])
        net = SSDHNet(backbone, saved["n_bits"], saved["n_classes"])
        net.load_state_dict(saved["state_dict"])
    except (KeyError, RuntimeError, ValueError, TypeError) as err:
        raise ValueError(f"{path} is not an SSDH model written by train_ssdh: {err.__class__.__name__}: {_first_line(err)}") from None
    return net


def _first_line(err: Exception) -> str:
    return str(err).strip().split("\n", 1)[0][:300]


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
    saved = _check_sizes(load_torch_file(path, "SSDH head"), path, "SSDH head", {"in_features": 100_000, "n_bits": MAX_BITS, "n_classes": 100_000})
    try:
        head = SSDHHead(saved["in_features"], saved["n_bits"], saved["n_classes"])
        head.load_state_dict(saved["state_dict"])
    except (KeyError, RuntimeError, TypeError) as err:
        raise ValueError(f"{path} is not an SSDH head written by train_ssdh_head: {err.__class__.__name__}: {_first_line(err)}") from None
    return head
