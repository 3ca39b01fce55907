"""The shared core of deep hashing: a hash layer over a backbone, trained with a method's loss.

Every method (:data:`cbir.deephash.LOSSES`, plug-ins included) is a :class:`~cbir.deephash.base.HashLoss`
on the raw outputs z of one linear hash layer; an image's code is ``z > 0``. Two ways to train,
each a stage function that writes, per code length, the model, every image's code (a descriptor
file, rows in the split's order) and a per-epoch history:

* :func:`train_end_to_end`: the backbone's trunk and the hash layers fine-tuned together on images
  by the loop of :func:`cbir.training.finetune` (augmentation, GPU, bf16, resumable checkpoints);
  several code lengths share every pass of the trunk (one hash layer each).
* :func:`train_head`: the hash layer (and the loss's own parameters) trained on a backbone's
  cached features, frozen: seconds instead of a fine-tuning.

A method's config section (``hashing.<method>``) holds the training keys of :data:`cbir.methods.DEEP_TRAINING_KEYS`
and the loss's options (the rest).
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
from cbir.methods import DEEP_TRAINING_KEYS
from cbir.deephash import make_loss
from cbir.deephash.base import HashLoss
from cbir.io import read_descriptors, write_descriptors, write_parquet
from cbir.models import Backbone, build_backbone, load_torch_file, smallcnn_width

log = logging.getLogger(__name__)

def loss_options(method_cfg: dict) -> dict:
    """The loss's options of a method's config section (every key but the training ones)."""
    return {k: v for k, v in method_cfg.items() if k not in DEEP_TRAINING_KEYS}


def has_classifier(loss: HashLoss) -> bool:
    """Whether a loss scores classes (SSDH, GreedyHash): then training logs an accuracy."""
    return type(loss).logits is not HashLoss.logits


def one_hot(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(N, C) 0/1 float targets of integer labels, or multi-hot targets passed through."""
    return labels.float() if labels.ndim == 2 else F.one_hot(labels, n_classes).float()


def outputs_by_length(bits, models, codes, histories) -> dict[int, dict]:
    """``{n_bits: {"model", "codes", "history"}: path}``, what the stages write, from parallel lists."""
    return {int(b): {"model": m, "codes": c, "history": h} for b, m, c, h in zip(bits, models, codes, histories, strict=True)}


def codes_of(z: np.ndarray) -> np.ndarray:
    """Packed codes (:mod:`cbir.codes`) of hash-layer outputs: bit l is set where z_l > 0."""
    return pack_bits(np.asarray(z) > 0)


class HashHead(nn.Module):
    """features -> the L raw outputs of the hash layer; holds the loss (and so its parameters)."""

    def __init__(self, in_features: int, loss: HashLoss):
        super().__init__()
        self.latent = nn.Linear(in_features, loss.n_bits)
        self.loss = loss

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # Handed to the loss in float32 (under bf16 autocast the linear layer itself still computes in bf16).
        return self.latent(features).float()


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the gradient multiplied by ``scale`` on the way back."""

    @staticmethod
    def forward(ctx, x, scale: float):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


class DeepHashNet(nn.Module):
    """A backbone's trunk followed by one hash head per code length in ``bits``, each with its own
    copy of the method's loss; it has what the fine-tuning loop needs of a backbone (``arch``,
    ``head``, ``trunk_parameters``, ``layers``).

    Layers: ``hash/<L>`` (the raw outputs) and, for methods with a classifier, ``logits/<L>``;
    ``hash`` and ``logits`` are the shortest code's. With several heads each head gets the gradient
    of its own loss and the shared trunk the mean of the heads' gradients: the sum of the losses
    trains each head as if it were alone and the trunk at the pace of one.
    """

    def __init__(self, backbone: Backbone, method: str, bits: int | Sequence[int], n_classes: int, seed: int = 0, options: dict | None = None):
        super().__init__()
        self.arch, self.method, self.n_classes, self.seed, self.options = backbone.arch, method, n_classes, seed, dict(options or {})
        self.backbone = backbone
        self.bits = tuple(sorted({int(bits)} if isinstance(bits, (int, np.integer)) else {int(b) for b in bits}))
        if not self.bits:
            raise ValueError(f"{method} needs at least one code length")
        self.heads = nn.ModuleDict({str(b): HashHead(backbone.head.in_features, make_loss(method, b, n_classes, seed, **self.options)) for b in self.bits})
        self.classifies = has_classifier(self.heads[str(self.bits[0])].loss)

    @property
    def head(self) -> nn.ModuleDict:
        return self.heads

    def trunk_parameters(self):
        return self.backbone.trunk_parameters()

    def layers(self, x: torch.Tensor, wanted=("hash",)) -> dict[str, torch.Tensor]:
        shared = self.backbone.layers(x, ("penultimate",))["penultimate"]
        if len(self.bits) > 1 and shared.requires_grad:
            shared = _ScaleGradient.apply(shared, 1 / len(self.bits))
        out = {"penultimate": shared}
        for b in self.bits:
            out[f"hash/{b}"] = self.heads[str(b)](shared)
        out["hash"] = out[f"hash/{self.bits[0]}"]
        for name in wanted:  # class scores only where asked for (validation, extraction of logits)
            if name.startswith("logits"):
                bits = name.partition("/")[2] or str(self.bits[0])
                out[name] = self.heads[bits].loss.logits(out[f"hash/{bits}"])
        return {name: out[name] for name in wanted}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x, ("logits" if self.classifies else "hash",))["logits" if self.classifies else "hash"]

    def single(self, n_bits: int) -> "DeepHashNet":
        """The network of one code length: the trunk (shared, not copied) and that head."""
        net = DeepHashNet(self.backbone, self.method, n_bits, self.n_classes, self.seed, self.options)
        net.heads[str(n_bits)] = self.heads[str(n_bits)]
        return net


class DeepHashObjective:
    """A deep hashing loss as an objective of :func:`cbir.training.finetune`: summed over the
    network's heads; with several, each head's terms (and accuracy) are logged as ``<term>_<L>``."""

    def __init__(self, n_classes: int):
        self.n_classes = n_classes

    def __call__(self, model: DeepHashNet, images: torch.Tensor, labels: torch.Tensor):
        out = model.layers(images, [f"hash/{b}" for b in model.bits])
        targets = one_hot(labels, self.n_classes)
        total, logged, first_logits = 0, {}, None
        for b in model.bits:
            loss_module = model.heads[str(b)].loss
            loss, terms = loss_module(out[f"hash/{b}"], targets)
            logits = loss_module.logits(out[f"hash/{b}"]) if model.classifies else None
            first_logits = logits if first_logits is None else first_logits
            total = total + loss
            if len(model.bits) == 1:
                logged = terms
            else:
                if logits is not None and labels.ndim == 1:
                    terms = {**terms, "accuracy": (logits.detach().argmax(1) == labels).float().mean()}
                logged.update({f"{name}_{b}": value for name, value in terms.items()})
        return total, first_logits, logged


# --------------------------------------------------------------------------------------------
# End to end: trunk and hash layers fine-tuned on images
# --------------------------------------------------------------------------------------------


def training_recipe(backbone_cfg: dict, method_cfg: dict) -> dict:
    """The end-to-end training's recipe: the backbone's ``finetune``, updated by the method's ``finetune``."""
    return {**backbone_cfg["finetune"], **method_cfg.get("finetune", {})}


def train_end_to_end(
    manifest_path,
    split_path,
    backbone_cfg: dict,
    method: str,
    method_cfg: dict,
    dataset_kind: str,
    seed: int,
    outputs: dict[int, dict],
    weights_path: str | None = None,
    image_cache=None,
) -> pd.DataFrame:
    """Train ``method`` end to end on the split's training images, one hash head per code length of
    ``outputs`` (``{n_bits: {"model", "codes", "history"}: path}``), all on one trunk; write each
    length's network, every image's code and the per-epoch history. Returns the joint history.

    The network starts from the backbone's configured weights (or ``weights_path``) and trains with
    the backbone's ``finetune`` recipe updated by ``method_cfg["finetune"]``; the loss takes the
    section's other keys (:func:`loss_options`). Resumable like fine-tuning.
    """
    from cbir.features import MIRROR_INVARIANT, image_set, load_backbone, split_images, training_sets
    from cbir.training import fingerprint, finetune, resolve_device, run_layers, save_checkpoint, seed_everything

    bits = sorted(outputs)
    images = split_images(manifest_path, split_path)
    if "labels" in images:
        # The fine-tuning loop carries one label per image; the head-only mode takes label sets.
        raise ValueError(f"{split_path}: end-to-end training takes single-label data; for a multi-label dataset use {method}_head")
    options = {**training_recipe(backbone_cfg, method_cfg), "head_only": False}
    n_classes = int(images["label"].max()) + 1
    seed_everything(seed)
    backbone, mode = load_backbone(backbone_cfg, dataset_kind, weights_path)
    backbone.replace_head(n_classes)  # unused by hashing; sized to the data so that the file says how to rebuild it
    net = DeepHashNet(backbone, method, bits, n_classes, seed, loss_options(method_cfg))
    size = backbone_cfg["input_size"]
    train_set, val_set = training_sets(images, options, seed, mode, size, image_cache, manifest_path)
    if not net.classifies:
        val_set = None  # validation scores a classifier; this method has none
    resume_path = Path(str(outputs[bits[0]]["model"]) + ".resume")
    run_id = fingerprint(method, backbone_cfg, method_cfg, bits, dataset_kind, seed, images.loc[images["train"], "image_id"].tolist(), weights_path)
    log.info("%s end to end: %s bits on one trunk, options %s", method, "/".join(map(str, bits)), net.heads[str(bits[0])].loss.options)
    history = finetune(net, train_set, val_set, options, dataset_kind in MIRROR_INVARIANT, seed, resume_path, run_id, objective=DeepHashObjective(n_classes))

    device = resolve_device(options["device"])
    batch_size = 1024 if device.type == "cuda" else 256
    layers = [f"hash/{b}" for b in bits]
    z = run_layers(net, image_set(images, mode, size, image_cache, manifest_path), layers, batch_size, options["workers"], device, progress=True, resident_gib=options.get("resident_gib"), precision=options.get("precision", "auto"))
    for b in bits:
        saved = {"method": method, "options": net.options, "seed": int(seed), "arch": net.arch, "n_bits": b, "n_classes": n_classes, "input_mode": mode, "input_size": size}
        save_checkpoint({**saved, "state_dict": net.single(b).state_dict()}, Path(outputs[b]["model"]))
        _write_codes(outputs[b]["codes"], images, z[f"hash/{b}"], b)
        write_parquet(_history_of(history, b, len(bits)), outputs[b]["history"])
    resume_path.unlink(missing_ok=True)
    return history


def _history_of(history: pd.DataFrame, n_bits: int, n_heads: int) -> pd.DataFrame:
    """One code length's view of a joint history: its own terms and training accuracy under the
    usual names (``train_loss`` stays the heads' sum; validation is the shortest code's)."""
    if n_heads == 1:
        return history
    suffix = f"_{n_bits}"
    own = {c: c[: -len(suffix)] for c in history.columns if c.startswith("train_") and c.endswith(suffix)}
    others = [c for c in history.columns if c.startswith("train_") and c not in own and c.rsplit("_", 1)[-1].isdigit()]
    return history.drop(columns=[c for c in ("train_accuracy", *others) if c in history.columns]).rename(columns=own)


# --------------------------------------------------------------------------------------------
# Head only: the hash layer on frozen, cached features
# --------------------------------------------------------------------------------------------


def fit_heads(features: np.ndarray, targets: np.ndarray, losses: Sequence[HashLoss], options: dict, seed: int, device: torch.device | str = "cpu") -> list[tuple[HashHead, pd.DataFrame]]:
    """Train one hash head per loss in ``losses`` (a method at several code lengths) on (features,
    (N, C) 0/1 targets) by SGD with momentum and a cosine schedule; return each head and its history.

    ``options``: epochs, batch_size, lr, momentum, weight_decay. Features are standardised for
    training (their scales vary by orders of magnitude between backbones) and the standardisation
    is folded into the hash layer, so the head takes raw features. The heads train in lock step,
    each as if alone: every head starts from the seed, all see the same batches, and one SGD step
    on the sum of their losses moves each head by its own loss's gradient alone (the heads share
    no parameter). That costs one step's overhead for all the lengths instead of one per length.
    """
    device = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    x = torch.tensor(features, dtype=torch.float32)  # a copy: features read from Parquet are read-only
    mean, scale = x.mean(0), x.std(0).clamp_min(1e-6)
    x = ((x - mean) / scale).to(device)
    y = torch.as_tensor(np.asarray(targets), dtype=torch.float32).to(device)
    labels = y.argmax(1) if bool((y.sum(1) == 1).all()) else None  # an accuracy only for single-label data
    heads = []
    for loss in losses:
        loss.multi_label = loss.multi_label or labels is None  # decided for the whole training set, not per batch
        torch.manual_seed(seed)  # each head starts where it would alone
        heads.append(HashHead(x.shape[1], loss).to(device).train())
    params = [p for head in heads for p in head.parameters()]
    optimizer = torch.optim.SGD(params, lr=options["lr"], momentum=options["momentum"], weight_decay=options["weight_decay"])
    batch_size = options["batch_size"]
    n_batches = len(x) // batch_size or 1  # whole batches: pairwise and balance terms are batch statistics
    steps = max(1, options["epochs"] * n_batches)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step / steps, 1.0))))
    classifies = [has_classifier(loss) and labels is not None for loss in losses]
    histories: list[list[dict]] = [[] for _ in heads]
    for epoch in range(1, options["epochs"] + 1):
        started = time.perf_counter()
        order = torch.randperm(len(x), generator=generator).to(device)
        totals: list[dict[str, torch.Tensor]] = [{} for _ in heads]  # sums over the epoch, on the device
        for start in range(0, n_batches * batch_size, batch_size):
            batch = order[start : start + batch_size]
            x_batch, y_batch = x[batch], y[batch]
            values = []
            for head, sums, classify in zip(heads, totals, classifies):
                z = head(x_batch)
                value, terms = head.loss(z, y_batch)
                values.append(value)
                step_terms = {"loss": value.detach(), **{name: t.detach() for name, t in terms.items()}}
                if classify:
                    step_terms["accuracy"] = (head.loss.logits(z).detach().argmax(1) == labels[batch]).float().mean()
                for name, t in step_terms.items():
                    sums[name] = sums[name] + t if name in sums else t
            optimizer.zero_grad(set_to_none=True)
            torch.stack(values).sum().backward()
            optimizer.step()
            scheduler.step()
        seconds = time.perf_counter() - started
        for head, sums, history in zip(heads, totals, histories):
            means = {name: t.item() / n_batches for name, t in sums.items()}
            history.append({"epoch": epoch, **{f"train_{name}": v for name, v in means.items()}, "lr": scheduler.get_last_lr()[0], "seconds": seconds})
            log.info("epoch %d/%d  %d bits  %s", epoch, options["epochs"], head.loss.n_bits, "  ".join(f"{name} {v:.4f}" for name, v in means.items()))
    fitted = []
    for head, history in zip(heads, histories):
        head = head.cpu().eval()
        with torch.no_grad():  # fold the standardisation in: W (x - m) / s + b = (W / s) x + b - (W / s) m
            head.latent.weight.div_(scale)
            head.latent.bias.sub_(head.latent.weight @ mean)
        fitted.append((head, pd.DataFrame(history)))
    return fitted


@torch.no_grad()
def head_outputs(head: HashHead, features: np.ndarray, batch_size: int = 65536) -> np.ndarray:
    """The hash layer's raw outputs z of raw ``features``, float32 (N, L)."""
    head.eval()
    x = torch.tensor(features, dtype=torch.float32)  # a copy: features read from Parquet are read-only
    return torch.cat([head(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]).numpy()


def train_head(features_path, method: str, method_cfg: dict, seed: int, outputs: dict[int, dict], validation_fraction: float = 0.0) -> None:
    """Train ``method``'s hash head on a split's cached features (a descriptor file), one per code
    length of ``outputs`` (``{n_bits: {"model", "codes", "history"}: path}``); write each head, every
    image's code and the per-epoch history. ``method_cfg``: the method's section (``head_only``:
    epochs, batch_size, lr, momentum, weight_decay, device; the loss's options).

    The training images the backbone held out for validation (``validation_fraction``, the same
    seeded rows) are held out here too, so that ``benchmarks/validation_map.py`` can score the codes.
    """
    from cbir.features import validation_mask
    from cbir.training import resolve_device, save_checkpoint

    features = read_descriptors(features_path)
    if features.is_binary:
        raise ValueError(f"{features_path} holds binary codes, not features")
    train = features.subset("train")
    train = train.subset_rows(~validation_mask(len(train), validation_fraction, seed))
    if not len(train):
        raise ValueError(f"{features_path} has no training rows")
    options, device = method_cfg["head_only"], resolve_device(method_cfg["head_only"].get("device", "auto"))
    n_classes = features.targets().shape[1]
    targets = train.targets(n_classes)  # one-hot, or multi-hot for multi-label data
    losses = []
    for b in sorted(outputs):
        torch.manual_seed(seed)  # a loss's own parameters (SSDH's, GreedyHash's classifier) start from the seed too
        loss = make_loss(method, b, n_classes, seed, **loss_options(method_cfg))
        loss.multi_label = features.is_multilabel
        losses.append(loss)
    log.info("%s head only: %s bits, options %s, on %d cached %d-d features, on %s", method, "/".join(map(str, sorted(outputs))), losses[0].options, len(train), train.values.shape[1], device)
    for loss, (head, history) in zip(losses, fit_heads(train.values, targets, losses, options, seed, device)):
        b = loss.n_bits
        saved = {"method": method, "options": loss_options(method_cfg), "seed": int(seed), "n_bits": b, "in_features": head.latent.in_features, "n_classes": n_classes}
        save_checkpoint({**saved, "state_dict": head.state_dict()}, Path(outputs[b]["model"]))
        _write_codes(outputs[b]["codes"], features.index_frame(), head_outputs(head, features.values), b)
        write_parquet(history, outputs[b]["history"])


def _write_codes(codes_path, index: pd.DataFrame, z: np.ndarray, n_bits: int) -> None:
    write_descriptors(codes_path, index, codes_of(z), n_bits=n_bits)  # the index's label sets too, on multi-label data
    log.info("wrote %d %d-bit codes to %s; %.1f%% of their bits set", len(z), n_bits, codes_path, 100 * (z > 0).mean())


# --------------------------------------------------------------------------------------------
# Loading what was written
# --------------------------------------------------------------------------------------------


def _check_saved(saved, path, what: str, sizes: dict[str, int]) -> dict:
    """The saved dict of a model file, its method a string, its options a dict and its sizes
    integers in their ranges."""
    if not isinstance(saved, dict):
        raise ValueError(f"{path} is not a {what}: it holds a {type(saved).__name__}")
    for key, limit in {**sizes, "n_bits": MAX_BITS, "n_classes": 100_000}.items():
        value = saved.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
            raise ValueError(f"{path} is not a {what}: {key} is {value!r}, expected an integer from 1 to {limit}")
    if not isinstance(saved.get("method"), str) or not isinstance(saved.get("options"), dict) or not isinstance(saved.get("seed", 0), int):
        raise ValueError(f"{path} is not a {what}: it names no method, options and seed")
    return saved


def _built(path, what: str, build):
    try:
        return build()
    except (KeyError, RuntimeError, ValueError, TypeError) as err:
        first_line = str(err).strip().split("\n", 1)[0][:300]
        raise ValueError(f"{path} is not a {what}: {err.__class__.__name__}: {first_line}") from None


def load_network(path) -> DeepHashNet:
    """A network written by :func:`train_end_to_end` (loaded with ``weights_only=True``)."""
    what = "deep hashing network written by train_end_to_end"
    saved = _check_saved(load_torch_file(path, "deep hashing network"), path, what, {})
    if saved.get("input_mode") not in ("L", "RGB"):
        raise ValueError(f"{path} is not a {what}: input_mode is {saved.get('input_mode')!r}")

    def build():
        state = saved["state_dict"] if isinstance(saved.get("state_dict"), dict) else {}
        width = smallcnn_width(state, "backbone.model.") if saved["arch"] == "smallcnn" else None  # as trained
        backbone = build_backbone(saved["arch"], "none", in_channels=len(saved["input_mode"]), n_classes=saved["n_classes"], width=width)
        net = DeepHashNet(backbone, saved["method"], saved["n_bits"], saved["n_classes"], saved.get("seed", 0), saved["options"])
        net.load_state_dict(saved["state_dict"])
        return net

    return _built(path, what, build)


def load_head(path) -> HashHead:
    """A head written by :func:`train_head` (loaded with ``weights_only=True``)."""
    what = "deep hashing head written by train_head"
    saved = _check_saved(load_torch_file(path, "deep hashing head"), path, what, {"in_features": 100_000})

    def build():
        head = HashHead(saved["in_features"], make_loss(saved["method"], saved["n_bits"], saved["n_classes"], saved.get("seed", 0), **saved["options"]))
        head.load_state_dict(saved["state_dict"])
        return head

    return _built(path, what, build)
