"""Fine-tuning throughput: the model's ceiling against the real input pipeline.

    uv run python benchmarks/bench_finetune.py                 # CPU, and CUDA when present
    uv run python benchmarks/bench_finetune.py --devices cpu --threads 1   # steadier on a busy machine

For smallcnn at 28 px, resnet18 at 64 px and resnet50 at 224 px (RGB, 10 classes, SGD):

(a) *ceiling*: training steps (augmentation, forward, backward, SGD) on random uint8 images that
    are already on the device: what the model and the device can do at best;
(b) *pipeline*: a folder of JPEG files (written at 8/7 of the input size, so they are resized)
    read the way the workflow reads a dataset: ``prepare_dataset`` (which decodes every file once
    to check it), ``build_image_cache`` (decode and resize once), then :func:`cbir.training.finetune`
    on the cache; its per-epoch images/s, after a first epoch of warm-up.

Both are the mean ± sd over ``--repeats`` runs (epochs for (b)) of the same number of images;
the table gives (b)/(a) and the one-off cache build rate. The header names the machine. On a
shared machine the numbers are noisy: compare rows of one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cbir.datasets import prepare_dataset, read_manifest
from cbir.image_cache import build_image_cache
from cbir.models import build_backbone, input_normalization
from cbir.training import Augment, ImageTensors, mixed_precision, finetune

# (arch, input size, images on CPU, images on CUDA, batch size on CPU, batch size on CUDA)
CASES = [
    ("smallcnn", 28, 4096, 65536, 128, 512),
    ("resnet18", 64, 512, 32768, 64, 256),
    ("resnet50", 224, 64, 8192, 32, 128),
]


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    model = platform.processor() or "unknown CPU"
    if Path("/proc/cpuinfo").is_file():
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        model = names[0] if names else model
    return f"{model}, {torch.get_num_threads()} torch threads of {os.cpu_count()} CPUs"


def options_for(device: torch.device, batch_size: int, epochs: int, compile_model: bool) -> dict:
    return {
        "epochs": epochs, "batch_size": batch_size, "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4, "schedule": "step",
        "lr_step_epochs": 100, "lr_gamma": 0.1, "augment": True, "head_only": False, "validation_fraction": 0.0,
        "device": device.type, "workers": 0, "compile": compile_model,
    }  # fmt: skip


def ceiling(arch: str, size: int, n_images: int, batch_size: int, device: torch.device, repeats: int, compile_model: bool) -> list[float]:
    """Images/s of training steps on uint8 images already on the device."""
    torch.manual_seed(0)
    backbone = build_backbone(arch, "none", in_channels=3, n_classes=10).to(device).train()
    if device.type == "cuda":
        backbone.to(memory_format=torch.channels_last)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    augment = Augment(*input_normalization(arch, 3), flip=True).to(device)
    optimizer = torch.optim.SGD(backbone.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    images = torch.randint(0, 256, (n_images, 3, size, size), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (n_images,), device=device)
    forward = torch.compile(backbone) if compile_model else backbone

    def one_pass():
        for start in range(0, n_images, batch_size):
            with mixed_precision(device):
                x = augment(images[start : start + batch_size], train=True)
                if device.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)
                loss = F.cross_entropy(forward(x).float(), labels[start : start + batch_size])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    one_pass()  # warm-up: kernel selection, compilation, allocator
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        one_pass()
        rates.append(n_images / (time.perf_counter() - started))
    return rates


def write_jpegs(root: Path, n_images: int, size: int, seed: int = 0) -> None:
    """``n_images`` JPEG files in 10 class folders: smooth random colour fields plus noise."""
    rng = np.random.default_rng(seed)
    side = size * 8 // 7
    for i in range(n_images):
        coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((side, side), Image.Resampling.BILINEAR)
        pixels = np.clip(np.asarray(image, dtype=np.int16) + rng.integers(-20, 21, (side, side, 3)), 0, 255).astype(np.uint8)
        path = root / f"class{i % 10}" / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, quality=90)


def pipeline(arch: str, size: int, n_images: int, batch_size: int, device: torch.device, repeats: int, compile_model: bool, workdir: Path) -> tuple[list[float], float]:
    """(images/s of the fine-tuning epochs after the first, images/s of the cache build) from JPEG files."""
    root = workdir / f"jpeg-{size}-{n_images}"
    if not root.is_dir():
        write_jpegs(root, n_images, size)
    manifest_path = workdir / f"manifest-{size}-{n_images}.parquet"
    prepare_dataset("imagefolder", manifest_path, root=str(root))
    cache_path = workdir / f"cache-RGB-{size}-{n_images}.npy"
    started = time.perf_counter()
    build_image_cache(manifest_path, "RGB", size, cache_path)
    build_rate = n_images / (time.perf_counter() - started)
    images = read_manifest(manifest_path).assign(row=lambda m: np.arange(len(m)))
    torch.manual_seed(0)
    backbone = build_backbone(arch, "none", in_channels=3, n_classes=10)
    history = finetune(backbone, ImageTensors(images, "RGB", size, cache=cache_path), None, options_for(device, batch_size, 1 + repeats, compile_model), flip=True, seed=0)
    return history["images_per_second"].tolist()[1:], build_rate


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):,.0f} ± {sd:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"], help="devices to measure (cuda is skipped when absent)")
    parser.add_argument("--cases", nargs="+", default=[c[0] for c in CASES], help="archs to measure")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, help="images per case (default: per case and device)")
    parser.add_argument("--compile", action="store_true", help="run the model through torch.compile")
    parser.add_argument("--workdir", type=Path, help="where the JPEG folders go (default: a temporary folder)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's); on a busy machine 1 is steadier")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for name in args.devices:
            if name == "cuda" and not torch.cuda.is_available():
                print("(no CUDA device: skipped)\n")
                continue
            device = torch.device(name)
            print(f"## {name}: {machine(device)}; torch {torch.__version__}; {args.repeats} repeats{'; torch.compile' if args.compile else ''}\n")
            print("| model | images | batch | (a) ceiling img/s | (b) pipeline img/s | (b)/(a) | cache build img/s |")
            print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
            for arch, size, n_cpu, n_cuda, batch_cpu, batch_cuda in CASES:
                if arch not in args.cases:
                    continue
                n_images = args.images or (n_cuda if device.type == "cuda" else n_cpu)
                batch = batch_cuda if device.type == "cuda" else batch_cpu
                a = ceiling(arch, size, n_images, batch, device, args.repeats, args.compile)
                b, build_rate = pipeline(arch, size, n_images, batch, device, args.repeats, args.compile, workdir)
                ratio = statistics.mean(b) / statistics.mean(a)
                print(f"| {arch}@{size} | {n_images:,} | {batch} | {mean_sd(a)} | {mean_sd(b)} | {ratio:.2f} | {build_rate:,.0f} |", flush=True)
            print()


if __name__ == "__main__":
    main()
