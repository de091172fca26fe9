"""Datasets: read a raw dataset once, carve a validation split, store one compact uint8 artifact.

The artifact (`prepared.pt`) holds uint8 images (N, C, H, W), int64 labels, class names and the
per-channel normalisation statistics of the training split. Training stages read only its
`train` and `val` splits; the `test` split is read only for the final numbers (evaluate, verify).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pipeline.core.config import PrepareConfig
from pipeline.core.errors import ConfigError, DataError
from pipeline.core.files import load_tensors, save_tensors
from pipeline.core.inputs import InputSpec
from pipeline.core.registry import Registry

FORMAT = "sokd-prepared/1"
log = logging.getLogger(__name__)
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

    return _on_disk(
        FashionMNIST,
        raw,
        f"cannot read Fashion-MNIST from {raw}/FashionMNIST/raw",
        "run `dvc repro fetch` (Debian: apt-get install dataset-fashion-mnist)",
    )


def _on_disk(dataset: Any, raw: Path, problem: str, fix: str) -> RawDataset:
    """Both splits of a torchvision dataset class from `raw` (never downloading); a missing or
    damaged copy is one DataError: `problem (torchvision's reason); fix`."""
    try:
        train = dataset(str(raw), train=True, download=False)
        test = dataset(str(raw), train=False, download=False)
    except RuntimeError as err:
        raise DataError(f"{problem} ({err}); {fix}") from None
    return _from_torchvision(train, test)


def _cifar(variant: str, raw: Path, verify_checksums: bool) -> RawDataset:
    from torchvision.datasets import CIFAR10, CIFAR100

    base = {"cifar10": CIFAR10, "cifar100": CIFAR100}[variant]
    cls = base if verify_checksums else _without_checksums(base)
    return _on_disk(
        cls,
        raw,
        f"{variant} not found or corrupted under {raw}",
        f"run `dvc repro fetch` online, or copy the extracted '{base.base_folder}' folder there",
    )


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


def _list_folder(root: Path) -> tuple[list[str], Tensor, tuple[str, ...]]:
    """Image files of `root/<class>/**` (in torchvision ImageFolder's order), labels, classes.

    Symlinks are followed (a class may live elsewhere), but a folder or file already reached is
    never taken twice: a link loop would otherwise repeat each photo once per turn and leak
    copies of it across the validation carve. macOS `._*` metadata files are skipped.
    """
    if not root.is_dir():
        raise DataError(
            f"image folder {root} does not exist; put one sub-folder of images per class there"
        )
    classes = tuple(sorted(entry.name for entry in os.scandir(root) if entry.is_dir()))
    files, labels, skipped = [], [], {"macOS ._ metadata file": 0, "repeated link": 0}
    seen: set[str] = set()
    for label, name in enumerate(classes):
        found = _class_files(root / name, seen, skipped)
        if not found:
            raise DataError(
                f"class folder {root / name} has no images; add some or remove the folder"
            )
        files += found
        labels += [label] * len(found)
    for what, count in skipped.items():
        if count:
            log.warning("warning: %s: skipped %d %s(s)", root, count, what)
    return files, _labels(labels), classes


def image_files(root: Path) -> list[str]:
    """The image files `prepare` takes from `root/<class>/**`, in its order."""
    return _list_folder(root)[0]


def _class_files(folder: Path, seen: set[str], skipped: dict[str, int]) -> list[str]:
    from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

    walked = []
    for here, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(here)
        if real in seen:  # a link back to a folder already listed
            skipped["repeated link"] += 1
            dirs[:] = []
            continue
        seen.add(real)
        walked.append((here, names))
    files = []
    for here, names in sorted(walked):
        for name in sorted(names):
            path = os.path.join(here, name)
            if name.startswith("._"):
                skipped["macOS ._ metadata file"] += 1
            elif has_file_allowed_extension(path, IMG_EXTENSIONS):
                if os.path.realpath(path) in seen:
                    skipped["repeated link"] += 1
                    continue
                seen.add(os.path.realpath(path))
                files.append(path)
    return files


def _check_classes(raw: Path, classes: tuple[str, ...], test_classes: tuple[str, ...]) -> None:
    """At least two classes, and the same ones in train/ and val/."""
    if len(classes) < 2:
        raise DataError(
            f"image folder {raw}/train has {len(classes)} class folder(s) ({', '.join(classes)});"
            f" a classifier needs at least two: put one sub-folder of images per class there"
        )
    if test_classes != classes:
        raise DataError(
            f"{raw}/val has classes {list(test_classes)} but {raw}/train has {list(classes)}"
        )


def open_image(path: Path | str, size: int, resize: str = "squash") -> Any:
    """One image file as an RGB PIL image (any mode: L, RGBA, palette, CMYK, 16-bit grey are
    converted), made size x size unless size is 0: squashed, or with its aspect kept
    (`shorter_side`: the shorter side to `size`, then the centre square)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = _as_rgb(img, path)
    except _unreadable_image() as err:
        raise _image_error(path, err) from None
    if size and resize == "shorter_side":
        w, h = img.size
        scale = size / min(w, h)
        img = img.resize(
            (max(size, round(w * scale)), max(size, round(h * scale))),
            Image.Resampling.BILINEAR,
        )
        w, h = img.size
        left, top = (w - size) // 2, (h - size) // 2
        img = img.crop((left, top, left + size, top + size))
    elif size:
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return img


WIDE_GREY = ("I", "I;16", "I;16B", "I;16L", "I;16N")  # how Pillow opens 16-bit greyscale


def _as_rgb(img: Any, path: Path | str) -> Any:
    """RGB, with 16-bit grey scaled to 8 bits (Pillow's own convert clips it to 255)."""
    from PIL import Image

    if img.mode in WIDE_GREY:
        wide = np.asarray(img).astype(np.int64)
        if wide.min() < 0 or wide.max() > 65535:
            raise DataError(
                f"image {path} holds 32-bit pixels; save it with 8 or 16 bits per channel"
            )
        img = Image.fromarray((wide >> 8).astype(np.uint8), "L")
    elif img.mode == "F":
        raise DataError(f"image {path} holds floating-point pixels; save it as 8-bit")
    return img.convert("RGB")


def _unreadable_image() -> tuple[type[BaseException], ...]:
    from PIL import Image, UnidentifiedImageError

    return UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError


def _image_error(path: Path | str, err: BaseException) -> DataError:
    from PIL import Image, UnidentifiedImageError

    reason, fix = str(err) or type(err).__name__, "remove or replace it"
    if isinstance(err, UnidentifiedImageError):
        reason = "not an image Pillow can identify (damaged, truncated or another format)"
    elif isinstance(err, Image.DecompressionBombError):
        reason = f"{reason.split(',')[0]} (Pillow's guard against decompression bombs)"
        fix = "shrink it (or remove it)"
    return DataError(f"cannot read image {path}: {reason}; {fix}")


def _read_folder(root: Path, size: int, resize: str) -> tuple[Tensor, Tensor, tuple[str, ...]]:
    from torchvision.transforms.functional import pil_to_tensor

    files, labels, classes = _list_folder(root)
    images = [pil_to_tensor(open_image(path, size, resize)) for path in files]
    shapes = {tuple(t.shape) for t in images}
    if len(shapes) > 1:
        raise DataError(
            f"images in {root} differ in size ({sorted(shapes)[:3]}...); "
            f"set prepare.image_size to resize them"
        )
    return torch.stack(images), labels, classes


@DATASETS.register("imagefolder")
def read_imagefolder(raw: Path, cfg: PrepareConfig) -> RawDataset:
    """The user's own images: `raw/train/<class>/*`, `raw/val/<class>/*`; `val/` is the test set."""
    train_x, train_y, classes = _read_folder(raw / "train", cfg.image_size, cfg.resize)
    test_x, test_y, test_classes = _read_folder(raw / "val", cfg.image_size, cfg.resize)
    _check_classes(raw, classes, test_classes)
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


def split_indices(
    train_labels: Tensor, num_test: int, num_classes: int, cfg: PrepareConfig, seed: int
) -> dict[str, Tensor]:
    """Seeded indices of the train, val (carved from the training images) and test splits."""
    n = len(train_labels)
    if cfg.val_size >= n:
        raise DataError(
            f"prepare.val_size={cfg.val_size} leaves no training images (dataset has {n})"
        )
    if int(train_labels.max()) >= num_classes or int(train_labels.min()) < 0:
        raise DataError(f"labels run outside the {num_classes} classes")
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=gen)
    val_idx, train_idx = order[: cfg.val_size], order[cfg.val_size :]
    if cfg.train_size:
        train_idx = train_idx[: cfg.train_size]
    test_idx = torch.arange(num_test)
    if cfg.test_size:
        test_idx = torch.randperm(num_test, generator=gen)[: cfg.test_size].sort().values
    return {"train": train_idx, "val": val_idx, "test": test_idx}


def _header(cfg: PrepareConfig, classes: Sequence[str], mean: list, std: list) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "dataset": cfg.dataset,
        "classes": list(classes),
        "mean": mean,
        "std": [max(s, 1e-3) for s in std],  # a constant channel must not divide by zero
    }


def carve(raw: RawDataset, cfg: PrepareConfig, seed: int) -> dict[str, Any]:
    """Split a seeded validation set off the training images, subsample, and compute statistics."""
    idx = split_indices(raw.train_labels, len(raw.test_labels), len(raw.classes), cfg, seed)
    sources = {"train": raw.train_images, "val": raw.train_images, "test": raw.test_images}
    labels = {"train": raw.train_labels, "val": raw.train_labels, "test": raw.test_labels}
    split = {
        name: {
            "images": sources[name][i].contiguous(),
            "labels": labels[name][i].contiguous(),
        }
        for name, i in idx.items()
    }
    mean, std = channel_stats(split["train"]["images"])
    return {**_header(cfg, raw.classes, mean, std), **split}


STATS_IMAGES = 2000  # training images the normalisation statistics of a file-backed split use


def _scan_images(files: Sequence[str]) -> tuple[set[tuple[int, int]], str]:
    """Check every file is a readable image; their sizes and one SHA-256 over all their bytes.

    The digest goes into the artifact so that changed pixels change `prepared.pt`, and DVC
    reruns the stages after `prepare` even when no file name changed.
    """
    from PIL import Image

    sizes, digest = set(), hashlib.sha256()
    for path in files:
        try:
            content = Path(path).read_bytes()  # read once: hashed, then checked from memory
            digest.update(content)
            with Image.open(io.BytesIO(content)) as img:
                sizes.add(img.size)
                img.verify()
        except _unreadable_image() as err:
            raise _image_error(path, err) from None
    return sizes, digest.hexdigest()


def prepare_files(raw: Path, cfg: PrepareConfig, seed: int) -> dict[str, Any]:
    """An image folder left on disk: the artifact lists files and labels; loaders read them.

    For folders too large for memory. Every file is checked here (header and integrity), so a
    corrupt image stops `prepare`, not an epoch hours later. Paths are stored relative to `raw`.
    """
    if cfg.dataset != "imagefolder":
        raise DataError(
            f"prepare.storage: files works only with dataset imagefolder, not {cfg.dataset!r}; "
            f"set prepare.storage: memory"
        )
    train_files, train_y, classes = _list_folder(raw / "train")
    test_files, test_y, test_classes = _list_folder(raw / "val")
    _check_classes(raw, classes, test_classes)
    sizes, digest = _scan_images(train_files + test_files)
    if not cfg.image_size and len(sizes) > 1:
        raise DataError(
            f"images in {raw} differ in size ({sorted(sizes)[:3]}...); "
            f"set prepare.image_size to resize them"
        )
    side_w, side_h = (cfg.image_size, cfg.image_size) if cfg.image_size else sizes.pop()
    idx = split_indices(train_y, len(test_y), len(classes), cfg, seed)
    files = {"train": train_files, "val": train_files, "test": test_files}
    labels = {"train": train_y, "val": train_y, "test": test_y}
    split = {
        name: {
            "files": [Path(files[name][k]).relative_to(raw).as_posix() for k in i.tolist()],
            "labels": labels[name][i].contiguous(),
        }
        for name, i in idx.items()
    }
    sample = Split(None, labels["train"], tuple(train_files), cfg.image_size, cfg.resize)
    stats_idx = idx["train"][:STATS_IMAGES].tolist()
    mean, std = channel_stats(torch.stack([sample.image(k) for k in stats_idx]))
    layout = {
        "storage": "files",
        "root": str(raw),
        "image_size": cfg.image_size,
        "resize": cfg.resize,
        "sha256": digest,
    }
    return {**_header(cfg, classes, mean, std), **layout, "shape": [3, side_h, side_w], **split}


def prepare(raw_dir: Path, cfg: PrepareConfig, seed: int) -> dict[str, Any]:
    """Read dataset `cfg.dataset` from `raw_dir` and return the prepared artifact as a dict."""
    try:
        reader = DATASETS.get(cfg.dataset)
    except ConfigError as err:
        raise ConfigError(f"params.prepare.dataset: {err}") from None
    if cfg.storage == "files":
        return prepare_files(raw_dir, cfg, seed)
    return carve(reader(raw_dir, cfg), cfg, seed)


def save_prepared(path: Path, prepared: dict[str, Any]) -> None:
    """Write the artifact atomically."""
    save_tensors(path, prepared)


@dataclass(frozen=True)
class Split:
    """One split: uint8 images in memory, or image files read on demand (prepare.storage: files)."""

    images: Tensor | None  # (N, C, H, W) uint8, or None for a file-backed split
    labels: Tensor  # (N,) int64
    files: tuple[str, ...] = ()  # file-backed: one path per image
    size: int = 0  # file-backed: side the images are resized to (0: as stored)
    resize: str = "squash"  # file-backed: squash | shorter_side (see open_image)

    @property
    def in_memory(self) -> bool:
        return self.images is not None

    def subset(self, index: Tensor) -> Split:
        """The images at `index`, in that order."""
        if self.images is not None:
            return Split(self.images[index], self.labels[index])
        picked = tuple(self.files[k] for k in index.tolist())
        return Split(None, self.labels[index], picked, self.size, self.resize)

    def pil(self, index: int) -> Any:
        """Image `index` as a PIL image (grey or RGB as stored)."""
        from torchvision.transforms.functional import to_pil_image

        if self.images is not None:
            return to_pil_image(self.images[index])
        return open_image(self.files[index], self.size, self.resize)

    def image(self, index: int) -> Tensor:
        """Image `index` as a uint8 (C, H, W) tensor."""
        from torchvision.transforms.functional import pil_to_tensor

        if self.images is not None:
            return self.images[index]
        return pil_to_tensor(self.pil(index))


@dataclass(frozen=True)
class Prepared:
    """A loaded artifact, restricted to the splits the caller asked for."""

    dataset: str
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    splits: dict[str, Split]
    shape: tuple[int, int, int] | None = None  # file-backed artifacts record the image shape
    # images in every split of the artifact, loaded or not: `quantize` sizes the test
    # measurement `verify` will make without reading the test images
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        if self.shape is not None:
            return self.shape
        c, h, w = next(iter(self.splits.values())).images.shape[1:]
        return int(c), int(h), int(w)

    def input_spec(self) -> InputSpec:
        """The data's own view: its training statistics at the stored size, nothing resized."""
        return InputSpec(self.mean, self.std, self.image_shape[1:], 0, "bilinear", "dataset")


def _split(raw: dict[str, Any], name: str) -> Split:
    part = raw[name]
    if raw.get("storage") != "files":
        return Split(part["images"], part["labels"])
    root = Path(raw["root"])
    files = tuple(str(root / f) for f in part["files"])
    return Split(None, part["labels"], files, raw["image_size"], raw.get("resize", "squash"))


def load_prepared(path: Path, splits: Sequence[str]) -> Prepared:
    """Load `prepared.pt` safely (weights_only) and return only `splits` of it."""
    raw = load_tensors(path, DataError, "prepared dataset", "run `dvc repro prepare`")
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise DataError(f"{path} is not a prepared dataset ({FORMAT}); run `dvc repro prepare`")
    shape = tuple(raw["shape"]) if raw.get("storage") == "files" else None
    return Prepared(
        raw["dataset"],
        tuple(raw["classes"]),
        tuple(raw["mean"]),
        tuple(raw["std"]),
        {s: _split(raw, s) for s in splits},
        shape,
        {s: len(raw[s]["labels"]) for s in SPLITS if s in raw},
    )


def describe(prepared: dict[str, Any]) -> str:
    """One line about a prepared artifact: sizes, classes, image shape, where images live."""
    counts = {s: len(prepared[s]["labels"]) for s in SPLITS}
    if prepared.get("storage") == "files":
        shape, where = tuple(prepared["shape"]), f"read from files under {prepared['root']}"
    else:
        shape, where = tuple(prepared["train"]["images"].shape[1:]), "in memory"
    return f"{counts}, {len(prepared['classes'])} classes, image {shape}, {where}"
