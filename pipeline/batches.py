"""Mini-batches from in-memory uint8 tensors, augmented batch-wise on the compute device.

Per-sample PIL transforms in DataLoader workers cost more than a small network's GPU step, and a
dataset the size of Fashion-MNIST or CIFAR fits in memory, so the whole split lives on the device as
uint8 and each batch is cropped, flipped and normalised there in a few tensor operations.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.config import AugmentConfig
from pipeline.data import Prepared


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

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self._drop_last else -(-n // self.batch_size)

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
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield self.transform(self.images[idx]), self.labels[idx]

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


def make_batches(
    data: Prepared,
    split: str,
    batch_size: int,
    augment: AugmentConfig | None,
    device: torch.device,
    seed: int,
    channels_last: bool,
) -> Batches:
    """Put one split of `data` on `device` and return its batch iterator."""
    s = data.splits[split]
    c = len(data.mean)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return Batches(
        images=s.images.to(device),
        labels=s.labels.to(device),
        mean=torch.tensor(data.mean, device=device).view(1, c, 1, 1),
        std=torch.tensor(data.std, device=device).view(1, c, 1, 1),
        batch_size=batch_size,
        augment=augment,
        generator=gen,
        channels_last=channels_last,
    )
