"""Fine-tuning a backbone and extracting its features, on a GPU when there is one.

Input: every image is decoded, converted and resized once (``ImageTensors`` reads a dataset's
``pixels.npy``, an image cache from :mod:`cbir.image_cache`, or decodes the files once), and
batches are gathered from that uint8 array by index. A set that fits in ``resident_gib`` is
copied to the training device once (GPU memory, or RAM on a CPU), so a batch is one tensor
gather there; a larger set streams from the memory-mapped array through a DataLoader (workers,
pinned memory, prefetch). Augmentation and normalisation run batched on the device (``Augment``).

A training step never waits for the device: loss and accuracy accumulate in device tensors and
are read only when progress is logged, a few times per epoch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cbir.datasets import ImageReader, image_array
from cbir.image_cache import decode_images, native_pixels
from cbir.io import atomic_output
from cbir.models import input_normalization, load_torch_file

log = logging.getLogger(__name__)

#: Sets up to this many GiB of uint8 pixels are held whole on the training device.
DEFAULT_RESIDENT_GIB = 4.0
#: Version of the resume checkpoint's layout: a checkpoint of another layout is not resumed.
CHECKPOINT_FORMAT = 2
HISTORY_COLUMNS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds", "images_per_second"]


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` takes CUDA when present; asking for ``cuda`` without one is an error."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for, but no CUDA GPU is visible (set finetune.device to auto or cpu)")
    return torch.device(device)


def describe_device(device: torch.device, precision: str = "auto") -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)}, {'float32' if precision == 'fp32' else 'bf16 mixed precision'}, channels-last, TF32)"
    return f"cpu ({torch.get_num_threads()} threads, {'bf16 mixed precision' if precision == 'bf16' else 'float32'}, channels-last)"


def _prepare_device(device: torch.device) -> None:
    """TF32 for the float32 matrix products and convolutions left outside bf16 autocast."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


PRECISIONS = ("auto", "bf16", "fp32")


def mixed_precision(device: torch.device, precision: str = "auto", training: bool = True):
    """bf16 autocast where ``precision`` asks for it, else a no-op context. Training: ``auto``
    on a GPU only, ``bf16`` on a CPU too (about twice as fast where the CPU has AMX), ``fp32``
    nowhere. Inference (extraction, validation, queries): bf16 on a GPU unless ``fp32``, never
    on a CPU, where a forward pass is cheap and float32 features are worth their cost."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    on_gpu = device.type == "cuda" and precision != "fp32"
    enabled = on_gpu or (training and precision == "bf16")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def seed_everything(seed: int) -> None:
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def image_tensor(image, size: int) -> torch.Tensor:
    """A PIL image as a uint8 C x size x size tensor (bilinear resize, as torchvision's Resize)."""
    return torch.from_numpy(image_array(image, size))


# --------------------------------------------------------------------------------------------
# Input: decoded images gathered by index
# --------------------------------------------------------------------------------------------


class ImageTensors(Dataset):
    """Manifest rows as uint8 C x size x size images, gathered in batches by position.

    The pixels come from ``cache`` (an image cache of the whole manifest, memory-mapped; ``images``
    then needs the column ``row``, its position in the manifest), else from the rows' own
    ``pixels.npy`` when that already has the size and colour mode asked for, else from the image
    files: decoded once into memory by :meth:`decode_all`, or one by one when streamed.
    Arrays are opened lazily, so the dataset pickles cheaply into data-loader workers.
    """

    def __init__(self, images: pd.DataFrame, mode: str, size: int, cache: str | os.PathLike | None = None):
        self.labels = images["label"].to_numpy(np.int64, copy=True)  # writable, for torch.from_numpy
        self.mode, self.size = mode, size
        self._pixels: np.ndarray | None = None
        self._reader = None
        if cache is not None:
            if "row" not in images:
                raise ValueError("reading an image cache needs each image's manifest position (column 'row')")
            self._source, self.rows = ("cache", str(cache)), images["row"].to_numpy(np.int64)
        elif (native := native_pixels(images, mode, size)) is not None:
            self._source, self.rows = ("pixels", images["path"].iloc[0]), native[1]
        else:
            self._source, self.rows = ("files", None), np.arange(len(images))
            self._images = images.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self):
        return {**self.__dict__, "_pixels": self._pixels if self._source[0] == "files" else None, "_reader": None}

    @property
    def nbytes(self) -> int:
        return len(self) * len(self.mode) * self.size * self.size

    def _array(self) -> np.ndarray | None:
        """N x C x S x S pixels to gather from, or None while image files are not decoded."""
        kind, path = self._source
        if self._pixels is None and kind != "files":
            try:
                pixels = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as err:
                raise ValueError(f"cannot read pixel array {path}: {err}") from err
            self._pixels = pixels if kind == "cache" else pixels.transpose(0, 3, 1, 2)
            if self._pixels.shape[1:] != (len(self.mode), self.size, self.size) or self.rows.max(initial=-1) >= len(self._pixels):
                raise ValueError(f"{path} holds {pixels.shape} pixels, which do not fit {len(self)} images in mode {self.mode} at {self.size} px")
        return self._pixels

    def decode_all(self) -> None:
        """Decode image files once, into memory (a no-op for pixel arrays and caches)."""
        if self._source[0] == "files" and self._pixels is None:
            log.info("decoding %d image files into memory (%.2f GiB); an image cache would save this", len(self), self.nbytes / 2**30)
            self._pixels = decode_images(self._images, self.mode, self.size)

    def gather(self, positions) -> torch.Tensor:
        """The images at ``positions`` as a contiguous uint8 n x C x S x S tensor."""
        positions = np.asarray(positions, dtype=np.int64)
        pixels = self._array()
        if pixels is None:
            if self._reader is None:
                self._reader = ImageReader(self._images, self.mode)
            batch = np.stack([image_array(self._reader[i], self.size) for i in positions])
        else:
            batch = np.ascontiguousarray(pixels[self.rows[positions]])
        return torch.from_numpy(batch)

    def __getitem__(self, i: int):
        return self.gather([i])[0], self.labels[i]


class _GatherBatches(Dataset):
    """A data-loader view of ``ImageTensors`` whose items are whole batches, fetched by a list
    of positions (one gather per batch instead of one read and a collate per image)."""

    def __init__(self, dataset: ImageTensors):
        self.dataset = dataset

    def __getitem__(self, positions: torch.Tensor):
        return self.dataset.gather(positions.numpy()), torch.from_numpy(self.dataset.labels[positions.numpy()])


def fits_on_device(nbytes: int, device: torch.device, resident_gib: float | None) -> bool:
    """Whether ``nbytes`` of pixels may be held whole on ``device``: within the budget and, on a
    GPU, within a quarter of its free memory (the model and activations need the rest)."""
    budget = (DEFAULT_RESIDENT_GIB if resident_gib is None else resident_gib) * 2**30
    if device.type == "cuda":
        budget = min(budget, torch.cuda.mem_get_info(device)[0] / 4)
    return nbytes <= budget


class Batches:
    """Batches of ``dataset`` as (uint8 images, labels) on ``device``, in an order given per pass.

    Resident: the whole set is gathered once and copied to the device, where each batch is an
    index gather. Streaming: a DataLoader gathers batches from the memory-mapped pixels in
    ``workers`` processes and hands them over in pinned memory, prefetched.
    """

    def __init__(self, dataset: ImageTensors, batch_size: int, device: torch.device, workers: int = 0, resident_gib: float | None = None):
        self.dataset, self.batch_size, self.device, self.workers = dataset, batch_size, device, workers
        self.resident = fits_on_device(dataset.nbytes, device, resident_gib)
        if self.resident:
            dataset.decode_all()
            images = dataset.gather(np.arange(len(dataset)))
            if device.type == "cuda":
                images = images.pin_memory()
            self.images = images.to(device, non_blocking=True)
            self.labels = torch.from_numpy(dataset.labels).to(device, non_blocking=True)
        log.info("%d images (%.2f GiB) %s", len(dataset), dataset.nbytes / 2**30, f"held on {device}" if self.resident else f"streamed by {workers} data-loader worker(s)")

    def n_batches(self, drop_single: bool = False) -> int:
        n = len(self.dataset)
        return n // self.batch_size if drop_single and n % self.batch_size == 1 else math.ceil(n / self.batch_size)

    def __call__(self, order: torch.Tensor, drop_single: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches in ``order`` (a CPU tensor of positions); ``drop_single`` leaves out a last batch
        of one image, which batch norm cannot train on."""
        chunks = list(order.split(self.batch_size))[: self.n_batches(drop_single)]
        if self.resident:
            order = order.to(self.device, non_blocking=True)
            for start in range(0, len(chunks) * self.batch_size, self.batch_size):
                positions = order[start : start + self.batch_size]
                yield self.images[positions], self.labels[positions]
            return
        loader = DataLoader(
            _GatherBatches(self.dataset),
            sampler=chunks,
            batch_size=None,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if self.workers else None,
        )
        for images, labels in loader:
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)


# --------------------------------------------------------------------------------------------
# Augmentation and objectives
# --------------------------------------------------------------------------------------------


class Augment(nn.Module):
    """uint8 images -> normalised floats, with batched random augmentation when training.

    Per image: a random affine map (rotation ±``degrees``, translation ±``translate`` of the size,
    scale in ``scale``) and, for datasets where mirror images are the same class, a horizontal flip.
    The random numbers come from ``generator`` (on the images' device) when one is given.
    """

    def __init__(self, mean, std, flip: bool, degrees: float = 10.0, translate: float = 0.1, scale=(0.9, 1.1)):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))
        self.flip, self.degrees, self.translate, self.scale = flip, degrees, translate, scale

    def forward(self, images: torch.Tensor, train: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        x = images.float().div_(255)
        if train:
            x = self._random_affine(x, generator)
        return (x - self.mean) / self.std

    def _random_affine(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        theta = self.random_theta(x.shape[0], x.device, generator)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def random_theta(self, n: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
        """n random 2 x 3 affine maps in ``affine_grid``'s normalised coordinates."""
        u = torch.rand(n, 5, device=device, generator=generator)  # one draw for the whole batch
        angle = (2 * u[:, 0] - 1) * self.degrees * math.pi / 180
        scale = self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, 1]
        shift = (2 * u[:, 2:4] - 1) * self.translate * 2  # the coordinates span 2
        mirror = torch.where(u[:, 4] < 0.5, -1.0, 1.0) if self.flip else torch.ones_like(angle)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        return torch.stack(
            [
                torch.stack([cos * mirror, -sin, shift[:, 0]], 1),
                torch.stack([sin * mirror, cos, shift[:, 1]], 1),
            ],
            1,
        )


#: (model, normalised images, labels) -> (loss, logits or None, named loss terms to log): what is minimised.
Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]]


def classification_objective(model: nn.Module, images: torch.Tensor, labels: torch.Tensor):
    """Cross-entropy of the model's logits (computed in float32 under mixed precision)."""
    logits = model(images)
    return F.cross_entropy(logits.float(), labels), logits, {}


# --------------------------------------------------------------------------------------------
# Fine-tuning
# --------------------------------------------------------------------------------------------


#: The one-cycle schedule's warm-up: this fraction of the steps, from a tenth of the peak rate.
ONECYCLE_WARMUP = 0.25


def _lr_factor(options: dict, epoch_float: float) -> float:
    """The learning rate at ``epoch_float`` (epochs done, fractional) relative to ``lr``:
    ``cosine`` anneals from 1 to 0; ``onecycle`` rises linearly from 0.1 to 1 over the first
    quarter of the training, then anneals as cosine (Smith's one-cycle policy, which reaches a
    given accuracy in fewer epochs); ``step`` divides by ``1 / lr_gamma`` every ``lr_step_epochs``."""
    done = min(epoch_float / max(options["epochs"], 1), 1.0)
    if options["schedule"] == "cosine":
        return 0.5 * (1 + math.cos(math.pi * done))
    if options["schedule"] == "onecycle":
        if done < ONECYCLE_WARMUP:
            return 0.1 + 0.9 * done / ONECYCLE_WARMUP
        return 0.5 * (1 + math.cos(math.pi * (done - ONECYCLE_WARMUP) / (1 - ONECYCLE_WARMUP)))
    return options["lr_gamma"] ** int(epoch_float // options["lr_step_epochs"])


def fingerprint(*parts) -> str:
    """A short digest of what a resumable run depends on."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_checkpoint(obj, path: Path) -> None:
    """torch.save, atomically."""
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def _read_checkpoint(path: Path) -> dict:
    """A resume checkpoint, or {} (start afresh) when it cannot be read as plain tensors and
    containers (``weights_only``: a tampered file is refused, nothing in it runs)."""
    try:
        state = load_torch_file(path, "resume checkpoint")
    except (OSError, ValueError) as err:
        log.warning("ignoring %s", err)
        return {}
    return state if isinstance(state, dict) else {}


def _rng_states(device: torch.device, shuffle: torch.Generator, augment: torch.Generator) -> dict:
    states = {"torch_rng": torch.get_rng_state(), "shuffle_rng": shuffle.get_state(), "augment_rng": augment.get_state()}
    if device.type == "cuda":  # dropout draws from the device's default generator
        states["cuda_rng"] = torch.cuda.get_rng_state(device)
    return states


def _set_rng_states(states: dict, device: torch.device, shuffle: torch.Generator, augment: torch.Generator) -> None:
    torch.set_rng_state(states["torch_rng"])
    shuffle.set_state(states["shuffle_rng"])
    augment.set_state(states["augment_rng"])
    if device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda_rng"], device)


def _set_train_mode(model: nn.Module, head_only: bool) -> None:
    model.train()
    if head_only:
        model.eval()  # frozen trunk: keep batch-norm statistics and dropout as pretrained
        model.head.train()


def finetune(
    backbone: nn.Module,
    train_set: ImageTensors,
    val_set: ImageTensors | None,
    options: dict,
    flip: bool,
    seed: int,
    resume_path: str | os.PathLike | None = None,
    run_id: str = "",
    objective: Objective = classification_objective,
) -> pd.DataFrame:
    """Train ``backbone`` in place by SGD with momentum; return per-epoch loss and accuracy.

    ``backbone`` is a :class:`cbir.models.Backbone` or a module with the same ``arch``, ``head``,
    ``trunk_parameters`` and ``layers`` (as :class:`cbir.deephash.core.DeepHashNet`); ``objective`` is what is
    minimised, and its named terms join the history as ``train_<name>`` columns. ``options`` holds
    the config's ``finetune`` keys: with ``head_only`` only the head is trained (the trunk is
    frozen, batch-norm statistics included); ``compile`` runs the objective through
    ``torch.compile``; ``resident_gib`` caps the pixels held on the device. After every epoch the
    state is saved to ``resume_path``; a later call with the same ``run_id`` resumes from it.
    """
    device = resolve_device(options["device"])
    _prepare_device(device)
    log.info("fine-tuning %s on %s: %d training and %d validation images, %d epochs", backbone.arch, describe_device(device, options.get("precision", "auto")), len(train_set), len(val_set or []), options["epochs"])
    seed_everything(seed)
    # Channels-last on CPUs too: oneDNN's convolutions are faster in it (smallcnn trains ~30 % faster).
    backbone.to(device, memory_format=torch.channels_last)
    augment = Augment(*input_normalization(backbone.arch, len(train_set.mode)), flip=flip and options["augment"]).to(device)
    params = list(backbone.head.parameters()) if options["head_only"] else list(backbone.parameters())
    if options["head_only"]:
        for p in backbone.trunk_parameters():
            p.requires_grad_(False)
    optimizer = torch.optim.SGD(params, lr=options["lr"], momentum=options["momentum"], weight_decay=options["weight_decay"])
    batches = Batches(train_set, options["batch_size"], device, options["workers"], options.get("resident_gib"))
    val_batches = Batches(val_set, options["batch_size"], device, options["workers"], options.get("resident_gib")) if val_set is not None and len(val_set) else None
    steps_per_epoch = batches.n_batches(drop_single=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(options, step / steps_per_epoch))
    shuffle_rng = torch.Generator().manual_seed(seed)
    augment_rng = torch.Generator(device=device).manual_seed(seed + 1)

    def loss_and_logits(images, labels):
        return objective(backbone, images, labels)

    if options.get("compile", False):
        loss_and_logits = torch.compile(loss_and_logits)

    history, start_epoch = [], 0
    resume_path = Path(resume_path) if resume_path else None
    if resume_path and resume_path.is_file():
        state = _read_checkpoint(resume_path)
        # Random states are per device type: a run started on a CPU restarts on a GPU.
        if state.get("run_id") == run_id and state.get("format") == CHECKPOINT_FORMAT and state.get("device_type") == device.type:
            backbone.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            _set_rng_states(state, device, shuffle_rng, augment_rng)
            history, start_epoch = state["history"], state["epoch"]
            log.info("resumed from %s after epoch %d", resume_path, start_epoch)
        else:
            log.info("ignoring %s: it belongs to another configuration or device type", resume_path)

    report_every = max(1, steps_per_epoch // 5)
    for epoch in range(start_epoch, options["epochs"]):
        _set_train_mode(backbone, options["head_only"])
        started, seen = time.perf_counter(), 0
        totals: dict[str, torch.Tensor] = {}  # sums over the epoch, on the device
        order = torch.randperm(len(train_set), generator=shuffle_rng)
        for step, (images, labels) in enumerate(batches(order, drop_single=True), 1):
            with mixed_precision(device, options.get("precision", "auto")):
                x = augment(images, train=True, generator=augment_rng).contiguous(memory_format=torch.channels_last)
                loss, logits, terms = loss_and_logits(x, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            n = images.shape[0]
            seen += n
            batch_sums = {"loss": loss.detach() * n, **{name: value.detach() * n for name, value in terms.items()}}
            if logits is not None:  # objectives without a classifier (most deep hashing losses) score no accuracy
                batch_sums["correct"] = (logits.detach().argmax(1) == labels).sum()
            for name, value in batch_sums.items():
                totals[name] = totals[name] + value if name in totals else value
            if step % report_every == 0 or step == steps_per_epoch:
                means = {name: value.item() / seen for name, value in totals.items()}  # waits for the device: only when logging
                terms_text = "".join(f"  {name} {means[name]:.4f}" for name in terms)
                accuracy = f"  acc {100 * means['correct']:.2f}%" if "correct" in means else ""
                log.info("epoch %d/%d  %3d%%  loss %.4f%s%s  lr %.2e  %.0f img/s", epoch + 1, options["epochs"], 100 * step // steps_per_epoch, means["loss"], accuracy, terms_text, scheduler.get_last_lr()[0], seen / (time.perf_counter() - started))
        means = {name: value.item() / seen for name, value in totals.items()}
        seconds = time.perf_counter() - started
        row = {"epoch": epoch + 1, "train_loss": means.pop("loss"), "train_accuracy": means.pop("correct", float("nan")), "lr": scheduler.get_last_lr()[0], "seconds": seconds, "images_per_second": seen / seconds}
        row.update({f"train_{name}": value for name, value in means.items()})
        if val_batches is not None:
            row["val_loss"], row["val_accuracy"] = evaluate(backbone, val_batches, options.get("precision", "auto"))
            log.info("epoch %d/%d  validation loss %.4f  acc %.2f%%", epoch + 1, options["epochs"], row["val_loss"], 100 * row["val_accuracy"])
        history.append(row)
        if resume_path:
            save_checkpoint(
                {
                    "format": CHECKPOINT_FORMAT,
                    "run_id": run_id,
                    "device_type": device.type,
                    "epoch": epoch + 1,
                    "model": backbone.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "history": history,
                    **_rng_states(device, shuffle_rng, augment_rng),
                },
                resume_path,
            )
    for p in backbone.parameters():
        p.requires_grad_(True)
    backbone.to("cpu", memory_format=torch.contiguous_format)
    extra = sorted({key for row in history for key in row} - set(HISTORY_COLUMNS))
    return pd.DataFrame(history, columns=HISTORY_COLUMNS + extra)


@torch.no_grad()
def evaluate(backbone: nn.Module, batches: Batches, precision: str = "auto") -> tuple[float, float]:
    """Mean cross-entropy and accuracy on the images of ``batches``."""
    logits = _forward_layers(backbone, batches, ("logits",), as_numpy=False, precision=precision)["logits"]
    labels = torch.from_numpy(batches.dataset.labels).to(logits.device)
    return F.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item()


# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------


def run_layers(
    backbone: nn.Module,
    dataset: ImageTensors,
    layers,
    batch_size: int = 256,
    workers: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
    resident_gib: float | None = None,
    precision: str = "auto",
) -> dict[str, np.ndarray]:
    """Activations of ``layers`` for every image of ``dataset``, in order, as float32 arrays
    (computed under ``precision``, see :func:`mixed_precision`)."""
    device = torch.device(device)
    _prepare_device(device)
    return _forward_layers(backbone, Batches(dataset, batch_size, device, workers, resident_gib), layers, progress, precision=precision)


@torch.no_grad()
def _forward_layers(backbone: nn.Module, batches: Batches, layers, progress: bool = False, as_numpy: bool = True, precision: str = "auto") -> dict:
    """``layers`` of every image of ``batches``: float32 arrays, or device tensors without
    ``as_numpy``. No gradients; on a GPU each batch's outputs are copied into pinned host memory
    without waiting, and the device is synchronised once, at the end."""
    device, n = batches.device, len(batches.dataset)
    was_training = backbone.training
    backbone.eval().to(device, memory_format=torch.channels_last)
    augment = Augment(*input_normalization(backbone.arch, len(batches.dataset.mode)), flip=False).to(device)
    on_host = as_numpy and device.type == "cuda"
    outputs: dict[str, torch.Tensor] = {}
    report_every = max(1, batches.n_batches() // 5)
    started, seen = time.perf_counter(), 0
    for step, (images, _) in enumerate(batches(torch.arange(n)), 1):
        with mixed_precision(device, precision, training=False):
            x = augment(images).contiguous(memory_format=torch.channels_last)
            batch = backbone.layers(x, layers)
        for name in layers:
            if name not in outputs:
                shape = (n, *batch[name].shape[1:])
                outputs[name] = torch.empty(shape, dtype=torch.float32, pin_memory=True) if on_host else torch.empty(shape, dtype=torch.float32, device=device)
            outputs[name][seen : seen + len(images)].copy_(batch[name].float(), non_blocking=True)
        seen += len(images)
        if progress and (step % report_every == 0 or seen == n):
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # an honest rate: wait for the work queued so far
            log.info("extracted %d/%d images  %.0f img/s", seen, n, seen / (time.perf_counter() - started))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    backbone.train(was_training)
    return {name: values.numpy() for name, values in outputs.items()} if as_numpy else outputs
