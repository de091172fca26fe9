"""Mini-batches from in-memory uint8 tensors, augmented batch-wise on the compute device.

Per-sample PIL transforms in DataLoader workers cost more than a small network's GPU step, and a
dataset the size of Fashion-MNIST or CIFAR fits in memory, so the whole split lives on the device as
uint8 and each batch is cropped, flipped and normalised there in a few tensor operations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from torchvision.transforms.functional import to_pil_image

from pipeline.config import AugmentConfig
from pipeline.data import Prepared
from pipeline.distributed import world
from pipeline.errors import ConfigError
from pipeline.runtime import Runtime


def random_crop(images: Tensor, pad: int, gen: torch.Generator) -> Tensor:
    """Reflect-pad by `pad` and crop back to the input size at a random offset per image."""
    b, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")  # (B, C, H+2p, W+2p)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device=gen.device).to(images.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device=gen.device).to(images.device)
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]  # (B, 1, 1, W)
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    chan = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def random_hflip(images: Tensor, gen: torch.Generator) -> Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], generator=gen, device=gen.device).to(images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


@dataclass
class Batches:
    """An iterable over (images, labels) mini-batches of one split, re-shuffled on every pass."""

    images: Tensor  # (N, C, H, W) uint8, already on `device`
    labels: Tensor  # (N,) int64, already on `device`
    mean: Tensor  # (1, C, 1, 1) float32
    std: Tensor  # (1, C, 1, 1) float32
    batch_size: int
    augment: (
        AugmentConfig | None
    )  # None: evaluation order, no augmentation, keep the last partial batch
    generator: torch.Generator
    channels_last: bool
    rank: int = 0  # under DDP each process trains on its slice of every global batch
    world_size: int = 1

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self._drop_last else -(-n // self.batch_size)

    def rng_state(self) -> Tensor:
        """State of the generator behind shuffling and augmentation (for resuming)."""
        return self.generator.get_state()

    def set_rng_state(self, state: Tensor) -> None:
        self.generator.set_state(state)

    @property
    def _drop_last(self) -> bool:
        # A last batch of one image breaks BatchNorm in training; evaluation must see every image.
        return self.augment is not None and len(self.labels) >= self.batch_size

    @property
    def num_images(self) -> int:
        return len(self) * self.batch_size if self._drop_last else len(self.labels)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.labels)
        if self.augment is not None:
            order = torch.randperm(n, generator=self.generator, device=self.generator.device)
            order = order.to(self.labels.device)
        else:
            order = torch.arange(n, device=self.labels.device)
        share = self.batch_size // self.world_size
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            images, labels = self.transform(self.images[idx]), self.labels[idx]
            if self.augment is not None and self.world_size > 1:
                # Augment the whole global batch, then keep this process's rows: every process draws
                # the same random numbers, so N processes see exactly what one process would.
                rows = slice(self.rank * share, (self.rank + 1) * share)
                images, labels = images[rows], labels[rows]
            yield images, labels

    def transform(self, images: Tensor) -> Tensor:
        """uint8 (B, C, H, W) -> augmented (training only), normalised float32."""
        x = images.float().div_(255)
        if self.augment is not None:
            if self.augment.pad:
                x = random_crop(x, self.augment.pad, self.generator)
            if self.augment.hflip:
                x = random_hflip(x, self.generator)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


class _UInt8Images(Dataset):
    """Per-sample view of uint8 images (N, C, H, W) via PIL transforms, as classic loaders do."""

    def __init__(self, images: Tensor, labels: Tensor, transform: Callable) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.transform(to_pil_image(self.images[index])), self.labels[index]


@dataclass
class StreamBatches:
    """DataLoader batches with per-sample PIL transforms in worker processes, moved to the device.

    The path for data that cannot live on the device, and the "plain path" the speed benchmark
    compares against. Same interface as `Batches`.
    """

    loader: DataLoader
    labels: Tensor  # (N,) int64 on the device, in evaluation order
    device: torch.device
    channels_last: bool

    def __len__(self) -> int:
        return len(self.loader)

    def rng_state(self) -> Tensor:
        """State of the generator the DataLoader draws each epoch's order and worker seeds from."""
        return self.loader.generator.get_state()

    def set_rng_state(self, state: Tensor) -> None:
        self.loader.generator.set_state(state)

    @property
    def num_images(self) -> int:
        return len(self) * self.loader.batch_size if self.loader.drop_last else len(self.labels)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        for images, labels in self.loader:
            images = images.to(self.device, non_blocking=True, memory_format=layout)
            yield images, labels.to(self.device, non_blocking=True)


def _stream(
    data: Prepared,
    split: str,
    batch_size: int,
    augment: AugmentConfig | None,
    runtime: Runtime,
    seed: int,
) -> StreamBatches:
    s = data.splits[split]
    steps: list[Callable] = []
    if augment is not None and augment.pad:
        steps.append(T.RandomCrop(s.images.shape[-2:], padding=augment.pad, padding_mode="reflect"))
    if augment is not None and augment.hflip:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(data.mean, data.std)]
    train = augment is not None
    loader = DataLoader(
        _UInt8Images(s.images, s.labels, T.Compose(steps)),
        batch_size=batch_size,
        shuffle=train,
        drop_last=train and len(s.labels) >= batch_size,
        num_workers=runtime.workers,
        generator=torch.Generator().manual_seed(seed),
        pin_memory=runtime.device.type == "cuda",
        persistent_workers=runtime.workers > 0,
    )
    return StreamBatches(loader, s.labels.to(runtime.device), runtime.device, runtime.channels_last)


BatchSource = Batches | StreamBatches  # iterable of (images, labels); len(); .labels; .num_images


def make_batches(
    data: Prepared,
    split: str,
    batch_size: int,
    augment: AugmentConfig | None,
    runtime: Runtime,
    seed: int,
) -> BatchSource:
    """Batches of one split for `runtime` (device, layout, loader); augment=None: evaluation.

    Under torchrun, training batches are global: each process gets batch_size / processes rows.
    """
    procs = world()
    if runtime.loader == "stream":
        if procs.size > 1:
            raise ConfigError(
                "runtime.loader: stream runs in one process; use loader: device under torchrun"
            )
        return _stream(data, split, batch_size, augment, runtime, seed)
    if augment is not None and batch_size % procs.size:
        raise ConfigError(
            f"batch_size {batch_size} does not split evenly over {procs.size} "
            f"processes; make it a multiple of the process count"
        )
    device = runtime.device
    s = data.splits[split]
    c = len(data.mean)
    return Batches(
        images=s.images.to(device),
        labels=s.labels.to(device),
        mean=torch.tensor(data.mean, device=device).view(1, c, 1, 1),
        std=torch.tensor(data.std, device=device).view(1, c, 1, 1),
        batch_size=batch_size,
        augment=augment,
        generator=torch.Generator(device="cpu").manual_seed(seed),
        channels_last=runtime.channels_last,
        rank=procs.rank,
        world_size=procs.size,
    )
