"""Backbones: torchvision CNNs (and a compact CPU-friendly one) split into trunk and head.

Every backbone exposes the same three layers:

``penultimate``  the input of the classifier head: ResNet's pooled features (2,048-d for
                 ResNet-50), AlexNet's FC7 (4,096-d, after ReLU), the small CNN's embedding
``logits``       the classifier head's output: AlexNet's FC8
``fc6``          AlexNet only: FC6 (after ReLU)

Weights are ``imagenet`` (torchvision's weights API, downloaded on first use), ``none`` (random,
seeded by the caller) or a state-dict file in torchvision's key format, which is also what the
fine-tuning stage writes. Files are loaded with ``weights_only=True``: a checkpoint cannot run code.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

ARCHS = ("smallcnn", "resnet18", "resnet50", "alexnet")
LAYERS = {"smallcnn": ("penultimate", "logits"), "resnet18": ("penultimate", "logits"), "resnet50": ("penultimate", "logits"), "alexnet": ("fc6", "penultimate", "logits")}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


#: SmallCNN's default width: the channels of its first stage.
SMALLCNN_WIDTH = 16


def smallcnn_width(state: dict, prefix: str = "") -> int | None:
    """The width of the smallcnn whose state dict is ``state`` (its keys under ``prefix``), read
    from its first convolution; None when the state holds none."""
    first = state.get(f"{prefix}features.0.weight")
    return int(first.shape[0]) if isinstance(first, torch.Tensor) and first.ndim == 4 else None


class SmallCNN(nn.Module):
    """A compact CNN with batch norm for small images (digits, MNIST, CIFAR) on a CPU.

    Three conv stages (two 3x3 convs each, batch norm, ReLU), global average pooling, a
    ``width * 8``-d embedding (the penultimate layer) and a linear classifier.
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 10, width: int = SMALLCNN_WIDTH):
        super().__init__()

        def stage(c_in, c_out):
            return [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]

        self.features = nn.Sequential(
            *stage(in_channels, width),
            nn.MaxPool2d(2),
            *stage(width, 2 * width),
            nn.MaxPool2d(2),
            *stage(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.embedding = nn.Sequential(nn.Linear(4 * width, 8 * width, bias=False), nn.BatchNorm1d(8 * width), nn.ReLU(inplace=True), nn.Dropout(0.2))
        self.classifier = nn.Linear(8 * width, n_classes)

    def forward(self, x):
        return self.classifier(self.embedding(self.features(x)))


class Backbone(nn.Module):
    """A CNN seen as ``trunk`` (image -> penultimate) and ``head`` (penultimate -> logits).

    ``model`` is the underlying torchvision (or SmallCNN) module; its ``state_dict`` is what is
    saved, so files stay loadable by plain torchvision.
    """

    def __init__(self, arch: str, model: nn.Module):
        super().__init__()
        self.arch = arch
        self.model = model

    @property
    def head(self) -> nn.Linear:
        return _head(self.arch, self.model)

    def replace_head(self, n_classes: int) -> None:
        """A fresh classifier for ``n_classes`` (fine-tuning on a new dataset)."""
        old = self.head
        _set_head(self.arch, self.model, nn.Linear(old.in_features, n_classes).to(old.weight.device))

    def trunk_parameters(self):
        head = {id(p) for p in self.head.parameters()}
        return [p for p in self.model.parameters() if id(p) not in head]

    def layers(self, x: torch.Tensor, wanted=("penultimate", "logits")) -> dict[str, torch.Tensor]:
        """The requested layers' activations for a batch of normalised images."""
        out = {}
        m = self.model
        if self.arch == "alexnet":
            x = torch.flatten(m.avgpool(m.features(x)), 1)
            out["fc6"] = m.classifier[:3](x)
            out["penultimate"] = m.classifier[3:6](out["fc6"])
        elif self.arch.startswith("resnet"):
            x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
            x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
            out["penultimate"] = torch.flatten(m.avgpool(x), 1)
        else:
            out["penultimate"] = m.embedding(m.features(x))
        if "logits" in wanted:
            out["logits"] = self.head(out["penultimate"])
        return {name: out[name] for name in wanted}

    def forward(self, x):
        return self.layers(x, ("logits",))["logits"]


def _head(arch: str, model: nn.Module) -> nn.Linear:
    if arch == "alexnet":
        return model.classifier[6]
    if arch.startswith("resnet"):
        return model.fc
    return model.classifier


def _set_head(arch: str, model: nn.Module, head: nn.Linear) -> None:
    if arch == "alexnet":
        model.classifier[6] = head
    elif arch.startswith("resnet"):
        model.fc = head
    else:
        model.classifier = head


def _head_key(arch: str) -> str:
    return {"alexnet": "classifier.6", "resnet18": "fc", "resnet50": "fc"}.get(arch, "classifier")


def load_torch_file(path: str | os.PathLike, what: str = "weights file") -> object:
    """What ``torch.save`` wrote to ``path``, read with ``weights_only=True``: tensors and plain
    containers only, so a crafted file cannot run code. A missing, corrupt or unsafe file is a
    FileNotFoundError or a one-line ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or unsafe files
        reason = str(err).strip().splitlines()
        unsafe = next((line.strip() for line in reason if "Unsupported global" in line), None)
        raise ValueError(f"cannot load {what} {path}: {unsafe or (reason[0] if reason else err.__class__.__name__)}") from None


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a file: a bare state dict, or a dict holding one under ``state_dict``."""
    loaded = load_torch_file(path)
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"weights file {path} holds no state dict of tensors")
    return state


def build_backbone(arch: str, weights: str = "none", in_channels: int = 3, n_classes: int | None = None, width: int | None = None) -> Backbone:
    """Build a backbone with its weights; ``n_classes`` sizes the head when no weights fix it.

    With ``imagenet`` or a weights file the head keeps the size it was trained with; call
    :meth:`Backbone.replace_head` to fine-tune for other classes. ``width`` is smallcnn's (16
    when not given; a weights file fixes it, and a ``width`` it contradicts is an error).
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")
    state = None
    if weights not in ("none", "imagenet"):
        state = load_state_dict(weights)
        key = f"{_head_key(arch)}.weight"
        if key not in state:
            raise ValueError(f"weights file {weights} does not fit arch {arch!r}: it has no {key}")
        n_classes = state[key].shape[0]
    n_classes = n_classes or 1000
    if arch == "smallcnn":
        if weights == "imagenet":
            raise ValueError("there are no ImageNet weights for smallcnn")
        saved_width = smallcnn_width(state) if state is not None else None
        if saved_width is not None:
            if width is not None and width != saved_width:
                raise ValueError(f"weights file {weights} holds a smallcnn of width {saved_width}, not {width}")
            width = saved_width
        model = SmallCNN(in_channels=in_channels, n_classes=n_classes, width=width or SMALLCNN_WIDTH)
    else:
        import torchvision  # about 1.6 s: only for the archs that need it

        # ImageNet weights are the original ones (V1), as in the papers.
        model = torchvision.models.get_model(arch, weights="IMAGENET1K_V1") if weights == "imagenet" else torchvision.models.get_model(arch, weights=None, num_classes=n_classes)
    if state is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"weights file {weights} does not fit arch {arch!r}: {str(err)[:400]}") from err
    return Backbone(arch, model)


def input_normalization(arch: str, in_channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std the backbone expects (ImageNet statistics for ImageNet archs)."""
    if arch == "smallcnn":
        return (0.5,) * in_channels, (0.5,) * in_channels
    return IMAGENET_MEAN, IMAGENET_STD
