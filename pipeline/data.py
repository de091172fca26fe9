"""Datasets: read a raw dataset once, carve a validation split, store one compact uint8 artifact.

The artifact (`prepared.pt`) holds uint8 images (N, C, H, W), int64 labels, class names and the
per-channel normalisation statistics of the training split. Training stages read only its
`train` and `val` splits; the `test` split is read only for the final numbers (evaluate, verify).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pipeline.config import PrepareConfig
from pipeline.errors import DataError
from pipeline.files import atomic_path, load_tensors
from pipeline.registry import Registry

FORMAT = "sokd-prepared/1"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class RawDataset:
    """A dataset as read from disk, before the validation carve."""

    train_images: Tensor  # (N, C, H, W) uint8
    train_labels: Tensor  # (N,) int64
    test_images: Tensor  # (M, C, H, W) uint8
    test_labels: Tensor  # (M,) int64
    classes: tuple[str, ...]


Reader = Callable[[Path, PrepareConfig], RawDataset]
DATASETS: Registry[Reader] = Registry("dataset")


def _as_nchw(images: Any) -> Tensor:
    """Turn (N, H, W) or (N, H, W, C) uint8 arrays into a contiguous (N, C, H, W) uint8 tensor."""
    t = torch.as_tensor(np.asarray(images))
    if t.dtype != torch.uint8:
        raise DataError(f"expected uint8 images, got {t.dtype}")
    t = t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2)
    return t.contiguous()


def _labels(targets: Any) -> Tensor:
    return torch.as_tensor(np.asarray(targets), dtype=torch.int64)


def _from_torchvision(train: Any, test: Any) -> RawDataset:
    """Wrap torchvision datasets that hold all their images in `.data` and labels in `.targets`."""
    return RawDataset(
        _as_nchw(train.data),
        _labels(train.targets),
        _as_nchw(test.data),
        _labels(test.targets),
        tuple(train.classes),
    )


@DATASETS.register("fashion_mnist")
def read_fashion_mnist(raw: Path, cfg: PrepareConfig) -> RawDataset:
    """Fashion-MNIST from torchvision's layout `raw/FashionMNIST/raw/*-ubyte` (never downloads)."""
    from torchvision.datasets import FashionMNIST

    try:
        train = FashionMNIST(str(raw), train=True, download=False)
        test = FashionMNIST(str(raw), train=False, download=False)
    except RuntimeError as err:
        raise DataError(
            f"cannot read Fashion-MNIST from {raw}/FashionMNIST/raw ({err}); "
            f"run `make data` (Debian: apt-get install dataset-fashion-mnist)"
        ) from None
    return _from_torchvision(train, test)


def _cifar(variant: str, raw: Path, verify_checksums: bool) -> RawDataset:
    from torchvision.datasets import CIFAR10, CIFAR100

    base = {"cifar10": CIFAR10, "cifar100": CIFAR100}[variant]
    cls = base if verify_checksums else _without_checksums(base)
    try:
        train = cls(str(raw), train=True, download=False)
        test = cls(str(raw), train=False, download=False)
    except RuntimeError as err:
        raise DataError(
            f"{variant} not found or corrupted under {raw} ({err}); run `make data` online, "
            f"or copy the extracted '{base.base_folder}' folder there"
        ) from None
    return _from_torchvision(train, test)


def _without_checksums(base: type) -> type:
    """A CIFAR class that checks files exist but not their md5: only for data the tests generate."""
    return type(
        base.__name__,
        (base,),
        {
            "train_list": [(name, None) for name, _ in base.train_list],
            "test_list": [(name, None) for name, _ in base.test_list],
            "meta": {**base.meta, "md5": None},
        },
    )


@DATASETS.register("cifar10")
def read_cifar10(raw: Path, cfg: PrepareConfig) -> RawDataset:
    """CIFAR-10 in its python pickle layout `raw/cifar-10-batches-py/`, md5-checked."""
    return _cifar("cifar10", raw, verify_checksums=True)


@DATASETS.register("cifar100")
def read_cifar100(raw: Path, cfg: PrepareConfig) -> RawDataset:
    """CIFAR-100 in its python pickle layout `raw/cifar-100-python/`, md5-checked."""
    return _cifar("cifar100", raw, verify_checksums=True)


def _read_folder(root: Path, size: int) -> tuple[Tensor, Tensor, tuple[str, ...]]:
    from PIL import Image, UnidentifiedImageError
    from torchvision.datasets import ImageFolder
    from torchvision.transforms.functional import pil_to_tensor

    if not root.is_dir():
        raise DataError(
            f"image folder {root} does not exist; put one sub-folder of images per class there"
        )
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if not any(f.is_file() for f in class_dir.rglob("*")):
            raise DataError(
                f"class folder {class_dir} has no images; add some or remove the folder"
            )
    try:
        folder = ImageFolder(str(root))
    except (FileNotFoundError, RuntimeError) as err:
        raise DataError(f"cannot read image folder {root}: {err}") from None
    images = []
    for path, _ in folder.samples:
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                if size:
                    img = img.resize((size, size), Image.Resampling.BILINEAR)
                images.append(pil_to_tensor(img))
        except (UnidentifiedImageError, OSError) as err:
            raise DataError(f"cannot read image {path}: {err}; remove or replace it") from None
    shapes = {tuple(t.shape) for t in images}
    if len(shapes) > 1:
        raise DataError(
            f"images in {root} differ in size ({sorted(shapes)[:3]}...); "
            f"set prepare.image_size to resize them"
        )
    return torch.stack(images), _labels(folder.targets), tuple(folder.classes)


@DATASETS.register("imagefolder")
def read_imagefolder(raw: Path, cfg: PrepareConfig) -> RawDataset:
    """The user's own images: `raw/train/<class>/*`, `raw/val/<class>/*`; `val/` is the test set."""
    train_x, train_y, classes = _read_folder(raw / "train", cfg.image_size)
    test_x, test_y, test_classes = _read_folder(raw / "val", cfg.image_size)
    if test_classes != classes:
        raise DataError(
            f"{raw}/val has classes {list(test_classes)} but {raw}/train has {list(classes)}"
        )
    if test_x.shape[1:] != train_x.shape[1:]:
        raise DataError(
            f"{raw}/val images are {tuple(test_x.shape[1:])}, train {tuple(train_x.shape[1:])}; "
            f"set prepare.image_size to resize both"
        )
    return RawDataset(train_x, train_y, test_x, test_y, classes)


@DATASETS.register("fake")
def read_fake(raw: Path, cfg: PrepareConfig) -> RawDataset:
    """torchvision FakeData (random RGB images, 10 classes) for tests; sizes come from params."""
    from torchvision.datasets import FakeData
    from torchvision.transforms.functional import pil_to_tensor

    if not (cfg.train_size and cfg.test_size and cfg.image_size):
        raise DataError("dataset 'fake' needs prepare.train_size, test_size and image_size > 0")

    def read(n: int, offset: int) -> tuple[Tensor, Tensor]:
        ds = FakeData(
            size=n,
            image_size=(3, cfg.image_size, cfg.image_size),
            num_classes=10,
            random_offset=offset,
        )
        pairs = [ds[i] for i in range(n)]
        return torch.stack([pil_to_tensor(img) for img, _ in pairs]), _labels([y for _, y in pairs])

    train_x, train_y = read(cfg.train_size + cfg.val_size, 0)
    test_x, test_y = read(cfg.test_size, 10_000_000)
    return RawDataset(train_x, train_y, test_x, test_y, tuple(f"class_{i}" for i in range(10)))


def channel_stats(images: Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images (N, C, H, W), on the [0, 1] scale."""
    x = (
        images.to(torch.float64).div_(255).transpose(0, 1).reshape(images.shape[1], -1)
    )  # (C, N*H*W)
    return x.mean(1).tolist(), x.std(1).tolist()


def carve(raw: RawDataset, cfg: PrepareConfig, seed: int) -> dict[str, Any]:
    """Split a seeded validation set off the training images, subsample, and compute statistics."""
    n = len(raw.train_labels)
    if cfg.val_size >= n:
        raise DataError(
            f"prepare.val_size={cfg.val_size} leaves no training images (dataset has {n})"
        )
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=gen)
    val_idx, train_idx = order[: cfg.val_size], order[cfg.val_size :]
    if cfg.train_size:
        train_idx = train_idx[: cfg.train_size]
    test_idx = torch.arange(len(raw.test_labels))
    if cfg.test_size:
        test_idx = torch.randperm(len(test_idx), generator=gen)[: cfg.test_size].sort().values
    if int(raw.train_labels.max()) >= len(raw.classes) or int(raw.train_labels.min()) < 0:
        raise DataError(f"labels run outside the {len(raw.classes)} classes {list(raw.classes)}")
    train_images = raw.train_images[train_idx].contiguous()
    mean, std = channel_stats(train_images)
    split = {
        "train": (train_images, raw.train_labels[train_idx]),
        "val": (raw.train_images[val_idx], raw.train_labels[val_idx]),
        "test": (raw.test_images[test_idx], raw.test_labels[test_idx]),
    }
    return {
        "format": FORMAT,
        "dataset": cfg.dataset,
        "classes": list(raw.classes),
        "mean": mean,
        "std": [max(s, 1e-3) for s in std],  # a constant channel must not divide by zero
        **{
            name: {"images": x.contiguous(), "labels": y.contiguous()}
            for name, (x, y) in split.items()
        },
    }


def prepare(raw_dir: Path, cfg: PrepareConfig, seed: int) -> dict[str, Any]:
    """Read dataset `cfg.dataset` from `raw_dir` and return the prepared artifact as a dict."""
    reader = DATASETS.get(cfg.dataset)
    return carve(reader(raw_dir, cfg), cfg, seed)


def save_prepared(path: Path, prepared: dict[str, Any]) -> None:
    """Write the artifact atomically."""
    with atomic_path(path) as tmp:
        torch.save(prepared, tmp)


@dataclass(frozen=True)
class Split:
    images: Tensor  # (N, C, H, W) uint8
    labels: Tensor  # (N,) int64


@dataclass(frozen=True)
class Prepared:
    """A loaded artifact, restricted to the splits the caller asked for."""

    dataset: str
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    splits: dict[str, Split]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = next(iter(self.splits.values())).images.shape[1:]
        return int(c), int(h), int(w)


def load_prepared(path: Path, splits: Sequence[str]) -> Prepared:
    """Load `prepared.pt` safely (weights_only) and return only `splits` of it."""
    raw = load_tensors(path, DataError, "prepared dataset", "run `dvc repro prepare`")
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise DataError(f"{path} is not a prepared dataset ({FORMAT}); run `dvc repro prepare`")
    chosen = {s: Split(raw[s]["images"], raw[s]["labels"]) for s in splits}
    return Prepared(
        raw["dataset"], tuple(raw["classes"]), tuple(raw["mean"]), tuple(raw["std"]), chosen
    )
