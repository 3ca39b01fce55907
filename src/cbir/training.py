"""Fine-tuning a backbone and extracting its features, on a GPU when there is one.

Images are decoded and resized on the host (``ImageTensors``); augmentation and normalisation run
batched on the training device (``Augment``), so a GPU is not starved by per-image transforms on
a few CPU cores.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cbir.datasets import ImageReader
from cbir.io import atomic_output
from cbir.models import Backbone, input_normalization

log = logging.getLogger(__name__)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` takes CUDA when present; asking for ``cuda`` without one is an error."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for, but no CUDA GPU is visible (set finetune.device to auto or cpu)")
    return torch.device(device)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)}, bf16 mixed precision, channels-last)"
    return f"cpu ({torch.get_num_threads()} threads)"


def seed_everything(seed: int) -> None:
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def image_tensor(image, size: int) -> torch.Tensor:
    """A PIL image as a uint8 C x size x size tensor (bilinear resize, as torchvision's Resize)."""
    if image.size != (size, size):
        image = image.resize((size, size), resample=2)
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))
    return pixels[None] if pixels.ndim == 2 else pixels.permute(2, 0, 1)


class ImageTensors(Dataset):
    """Manifest rows as (uint8 C x size x size tensor, label) pairs."""

    def __init__(self, manifest: pd.DataFrame, mode: str, size: int):
        self.reader = ImageReader(manifest, mode)
        self.labels = manifest["label"].to_numpy(np.int64)
        self.size = size

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return image_tensor(self.reader[i], self.size), self.labels[i]


class Augment(nn.Module):
    """uint8 images -> normalised floats, with batched random augmentation when training.

    Per image: a random affine map (rotation ±``degrees``, translation ±``translate`` of the size,
    scale in ``scale``) and, for datasets where mirror images are the same class, a horizontal flip.
    """

    def __init__(self, mean, std, flip: bool, degrees: float = 10.0, translate: float = 0.1, scale=(0.9, 1.1)):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))
        self.flip, self.degrees, self.translate, self.scale = flip, degrees, translate, scale

    def forward(self, images: torch.Tensor, train: bool = False) -> torch.Tensor:
        x = images.float().div_(255)
        if train:
            x = self._random_affine(x)
        return (x - self.mean) / self.std

    def _random_affine(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        uniform = lambda low, high: torch.empty(n, device=x.device).uniform_(low, high)  # noqa: E731
        angle = uniform(-self.degrees, self.degrees) * math.pi / 180
        scale = uniform(*self.scale)
        mirror = torch.where(torch.rand(n, device=x.device) < 0.5, -1.0, 1.0) if self.flip else torch.ones(n, device=x.device)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [
                torch.stack([cos * mirror, -sin, uniform(-self.translate, self.translate) * 2], 1),
                torch.stack([sin * mirror, cos, uniform(-self.translate, self.translate) * 2], 1),
            ],
            1,
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _loader(dataset: Dataset, batch_size: int, shuffle: bool, workers: int, seed: int, device: torch.device) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        generator=generator,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )


def _lr_factor(options: dict, epoch_float: float) -> float:
    if options["schedule"] == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(epoch_float / max(options["epochs"], 1), 1.0)))
    return options["lr_gamma"] ** int(epoch_float // options["lr_step_epochs"])


def fingerprint(*parts) -> str:
    """A short digest of what a resumable run depends on."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_checkpoint(obj, path: Path) -> None:
    """torch.save, atomically."""
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def finetune(
    backbone: Backbone,
    train_set: ImageTensors,
    val_set: ImageTensors | None,
    options: dict,
    flip: bool,
    seed: int,
    resume_path: str | os.PathLike | None = None,
    run_id: str = "",
) -> pd.DataFrame:
    """Train ``backbone`` in place by SGD with momentum; return per-epoch loss and accuracy.

    ``options`` holds the config's ``finetune`` keys. With ``head_only`` only the classifier head is
    trained (the trunk is frozen, batch-norm statistics included). After every epoch the state is
    saved to ``resume_path``; a later call with the same ``run_id`` resumes from it.
    """
    device = resolve_device(options["device"])
    log.info("fine-tuning %s on %s: %d training and %d validation images, %d epochs", backbone.arch, describe_device(device), len(train_set), len(val_set or []), options["epochs"])
    seed_everything(seed)
    backbone.to(device)
    if device.type == "cuda":
        backbone.to(memory_format=torch.channels_last)
    in_channels = train_set[0][0].shape[0]
    augment = Augment(*input_normalization(backbone.arch, in_channels), flip=flip and options["augment"]).to(device)
    params = list(backbone.head.parameters()) if options["head_only"] else list(backbone.parameters())
    if options["head_only"]:
        for p in backbone.trunk_parameters():
            p.requires_grad_(False)
    optimizer = torch.optim.SGD(params, lr=options["lr"], momentum=options["momentum"], weight_decay=options["weight_decay"])
    loader = _loader(train_set, options["batch_size"], True, options["workers"], seed, device)
    steps_per_epoch = len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(options, step / steps_per_epoch))

    history, start_epoch = [], 0
    resume_path = Path(resume_path) if resume_path else None
    if resume_path and resume_path.is_file():
        state = torch.load(resume_path, map_location=device, weights_only=True)
        if state.get("run_id") == run_id:
            backbone.model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            loader.generator.set_state(state["loader_rng"])
            history, start_epoch = state["history"], state["epoch"]
            log.info("resumed from %s after epoch %d", resume_path, start_epoch)
        else:
            log.info("ignoring %s: it belongs to another configuration", resume_path)

    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    for epoch in range(start_epoch, options["epochs"]):
        backbone.train()
        if options["head_only"]:
            backbone.eval()  # frozen trunk: keep batch-norm statistics and dropout as pretrained
            backbone.head.train()
        started, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
        report_every = max(1, steps_per_epoch // 5)
        for step, (images, labels) in enumerate(loader, 1):
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            if device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast:
                logits = backbone(augment(images, train=True))
                loss = F.cross_entropy(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            seen += len(labels)
            loss_sum += loss.item() * len(labels)
            correct += (logits.argmax(1) == labels).sum().item()
            if step % report_every == 0 or step == steps_per_epoch:
                rate = seen / (time.perf_counter() - started)
                log.info("epoch %d/%d  %3d%%  loss %.4f  acc %.2f%%  lr %.2e  %.0f img/s", epoch + 1, options["epochs"], 100 * step // steps_per_epoch, loss_sum / seen, 100 * correct / seen, scheduler.get_last_lr()[0], rate)
        row = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_accuracy": correct / seen, "lr": scheduler.get_last_lr()[0], "seconds": time.perf_counter() - started, "images_per_second": seen / (time.perf_counter() - started)}
        if val_set is not None and len(val_set):
            row["val_loss"], row["val_accuracy"] = evaluate(backbone, val_set, options["batch_size"], options["workers"], device)
            log.info("epoch %d/%d  validation loss %.4f  acc %.2f%%", epoch + 1, options["epochs"], row["val_loss"], 100 * row["val_accuracy"])
        history.append(row)
        if resume_path:
            save_checkpoint(
                {
                    "run_id": run_id,
                    "epoch": epoch + 1,
                    "model": backbone.model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "loader_rng": loader.generator.get_state(),
                    "history": history,
                },
                resume_path,
            )
    for p in backbone.parameters():
        p.requires_grad_(True)
    backbone.to("cpu", memory_format=torch.contiguous_format)
    return pd.DataFrame(history, columns=["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds", "images_per_second"])


@torch.no_grad()
def evaluate(backbone: Backbone, dataset: ImageTensors, batch_size: int, workers: int, device: torch.device) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on ``dataset``."""
    logits = run_layers(backbone, dataset, ("logits",), batch_size, workers, device)["logits"]
    labels = torch.tensor(dataset.labels)
    logits = torch.from_numpy(logits)
    return F.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item()


@torch.no_grad()
def run_layers(backbone: Backbone, dataset: ImageTensors, layers, batch_size: int = 256, workers: int = 0, device: torch.device | str = "cpu", progress: bool = False) -> dict[str, np.ndarray]:
    """Activations of ``layers`` for every image of ``dataset``, in order, as float32 arrays."""
    device = torch.device(device)
    was_training = backbone.training
    backbone.eval().to(device)
    if device.type == "cuda":
        backbone.to(memory_format=torch.channels_last)
    augment = Augment(*input_normalization(backbone.arch, dataset[0][0].shape[0]), flip=False).to(device)
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    outputs = {name: [] for name in layers}
    loader = _loader(dataset, batch_size, False, workers, 0, device)
    started, seen = time.perf_counter(), 0
    for step, (images, _) in enumerate(loader, 1):
        images = images.to(device, non_blocking=True)
        if device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast:
            batch = backbone.layers(augment(images), layers)
        for name in layers:
            outputs[name].append(batch[name].float().cpu())
        seen += len(images)
        if progress and (step % max(1, len(loader) // 5) == 0 or step == len(loader)):
            log.info("extracted %d/%d images  %.0f img/s", seen, len(dataset), seen / (time.perf_counter() - started))
    backbone.train(was_training)
    return {name: torch.cat(parts).numpy().astype(np.float32, copy=False) for name, parts in outputs.items()}
