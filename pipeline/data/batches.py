"""Mini-batches from in-memory uint8 tensors, augmented batch-wise on the compute device.

Per-sample PIL transforms in DataLoader workers cost more than a small network's GPU step, and a
dataset the size of Fashion-MNIST or CIFAR fits in memory, so the whole split lives on the device as
uint8 and each batch is cropped, flipped and normalised there in a few tensor operations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from pipeline.core.config import AugmentConfig
from pipeline.core.distributed import world
from pipeline.core.errors import ConfigError, DataError
from pipeline.core.inputs import InputSpec
from pipeline.core.runtime import Runtime
from pipeline.data.datasets import Prepared, Split


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


def random_resized_crop(
    images: Tensor,
    size: tuple[int, int],
    scale: tuple[float, ...],
    ratio: tuple[float, ...],
    interpolation: str,
    gen: torch.Generator,
) -> Tensor:
    """A random box per image (area fraction in `scale`, aspect ratio in `ratio`, clipped to the
    image) resized to `size`: one affine resampling of the whole batch on its device."""
    b, _, h, w = images.shape
    draw = lambda: torch.rand(b, generator=gen, device=gen.device).to(images.device)  # noqa: E731
    area = (scale[0] + (scale[1] - scale[0]) * draw()) * (h * w)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * draw())
    box_w = torch.sqrt(area * aspect).clamp(1, w)
    box_h = torch.sqrt(area / aspect).clamp(1, h)
    cx = box_w / 2 + (w - box_w) * draw()
    cy = box_h / 2 + (h - box_h) * draw()
    theta = torch.zeros(b, 2, 3, device=images.device)
    theta[:, 0, 0], theta[:, 0, 2] = box_w / w, 2 * cx / w - 1
    theta[:, 1, 1], theta[:, 1, 2] = box_h / h, 2 * cy / h - 1
    grid = F.affine_grid(theta, [b, images.shape[1], *size], align_corners=False)
    mode = "bilinear" if interpolation == "bicubic" else interpolation  # grid_sample: no bicubic
    return F.grid_sample(images, grid, mode=mode, padding_mode="border", align_corners=False)


def resize_and_crop(images: Tensor, spec: InputSpec) -> Tensor:
    """Evaluation geometry: the shorter side to `spec.resize` and a centre crop of `spec.size`
    (without a resize, a plain resize to `spec.size` when the images have another size).

    torchvision's arithmetic (`transforms.v2.functional.resize` and `center_crop`), bit for bit
    on the same float images: the longer side truncated, the crop offset rounded."""
    h, w = images.shape[-2:]
    if spec.resize:
        short, long = min(h, w), max(h, w)
        longer = int(spec.resize * long / short)
        target = (spec.resize, longer) if h <= w else (longer, spec.resize)
    else:
        target = spec.size
    if (h, w) != tuple(target):
        images = F.interpolate(
            images, size=target, mode=spec.interpolation, antialias=spec.interpolation != "nearest"
        ).clamp_(0, 1)
    top = round((images.shape[-2] - spec.size[0]) / 2.0)  # Python rounds half to even, as there
    left = round((images.shape[-1] - spec.size[1]) / 2.0)
    return images[..., top : top + spec.size[0], left : left + spec.size[1]]


def drops_last(size: int, batch_size: int, train: bool) -> bool:
    """Whether the last partial batch is dropped: in training, when there is a full batch at all.

    A last batch of one image breaks BatchNorm in training; evaluation must see every image.
    """
    return train and size >= batch_size


def batch_count(size: int, batch_size: int, drop_last: bool) -> int:
    return size // batch_size if drop_last else -(-size // batch_size)


@dataclass
class Batches:
    """An iterable over (images, labels) mini-batches of one split, re-shuffled on every pass."""

    images: Tensor  # (N, C, H, W) uint8, already on `device`
    labels: Tensor  # (N,) int64, already on `device`
    spec: InputSpec  # what the network reads: normalisation, size, evaluation resize
    mean: Tensor  # (1, C, 1, 1) float32, from `spec`
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
        return batch_count(len(self.labels), self.batch_size, self._drop_last)

    def rng_state(self) -> Tensor:
        """State of the generator behind shuffling and augmentation (for resuming)."""
        return self.generator.get_state()

    def set_rng_state(self, state: Tensor) -> None:
        self.generator.set_state(state)

    @property
    def _drop_last(self) -> bool:
        return drops_last(len(self.labels), self.batch_size, self.augment is not None)

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

    def pixels(self) -> Iterator[Tensor]:
        """The images as stored, uint8 (B, C, H, W), in evaluation order and batches: what a
        file that resizes and crops itself reads (`export.input: uint8_any_size`)."""
        for start in range(0, len(self.labels), self.batch_size):
            yield self.images[start : start + self.batch_size].cpu()

    def transform(self, images: Tensor) -> Tensor:
        """uint8 (B, C, H, W) -> augmented (training) or resized and cropped (evaluation),
        normalised float32 at the spec's size."""
        x = images.float().div_(255)
        a, spec = self.augment, self.spec
        if a is None:
            x = resize_and_crop(x, spec)
        elif a.kind == "random_resized_crop":
            x = random_resized_crop(
                x, spec.size, a.scale, a.ratio, spec.interpolation, self.generator
            )
        else:
            if a.pad:
                x = random_crop(x, a.pad, self.generator)
            if tuple(x.shape[-2:]) != spec.size:
                x = F.interpolate(x, size=spec.size, mode=spec.interpolation, antialias=True)
        if a is not None and a.hflip:
            x = random_hflip(x, self.generator)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


class _Compose:
    """Apply per-sample transforms in order (a picklable stand-in for torchvision's Compose)."""

    def __init__(self, steps: list[Callable]) -> None:
        self.steps = steps

    def __call__(self, image: object) -> object:
        for step in self.steps:
            image = step(image)
        return image


class _Images(Dataset):
    """Per-sample view of a split (memory or files) through PIL transforms, as classic loaders."""

    def __init__(self, split: Split, transform: Callable) -> None:
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.transform(self.split.pil(index)), self.split.labels[index]


class GlobalBatchSampler(Sampler[list[int]]):
    """Index batches; under torchrun, this process's rows of every global batch.

    Every process draws the same permutation from the same seeded generator, so N processes
    together see exactly the batches one process would (the streamed twin of `Batches`).
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        shuffle: bool,
        generator: torch.Generator,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.size, self.batch_size, self.shuffle = size, batch_size, shuffle
        self.generator, self.rank, self.world_size = generator, rank, world_size
        self.drop_last = drops_last(size, batch_size, shuffle)

    def __len__(self) -> int:
        return batch_count(self.size, self.batch_size, self.drop_last)

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            order = torch.randperm(self.size, generator=self.generator)
        else:
            order = torch.arange(self.size)
        share = self.batch_size // self.world_size
        for i in range(len(self)):
            batch = order[i * self.batch_size : (i + 1) * self.batch_size]
            if self.shuffle and self.world_size > 1:
                batch = batch[self.rank * share : (self.rank + 1) * share]
            yield batch.tolist()


@dataclass
class StreamBatches:
    """DataLoader batches with per-sample PIL transforms in worker processes, moved to the device.

    The path for image folders read from files (too large for memory), and the "plain path" the
    speed benchmark compares against. Same interface as `Batches`.
    """

    loader: DataLoader
    sampler: GlobalBatchSampler
    labels: Tensor  # (N,) int64 on the device, in evaluation order
    device: torch.device
    channels_last: bool

    def __len__(self) -> int:
        return len(self.sampler)

    def rng_state(self) -> Tensor:
        """State of the generator each epoch's order and the workers' seeds are drawn from."""
        return self.sampler.generator.get_state()

    def set_rng_state(self, state: Tensor) -> None:
        self.sampler.generator.set_state(state)

    @property
    def num_images(self) -> int:
        s = self.sampler
        return len(s) * s.batch_size if s.drop_last else len(self.labels)

    def pixels(self) -> Iterator[Tensor]:
        """The images as read from their files, uint8 (B, C, H, W), in evaluation order: a batch
        ends early where the size changes (see `Batches.pixels`)."""
        split, size = self.loader.dataset.split, self.sampler.batch_size
        batch: list[Tensor] = []
        for index in range(len(split.labels)):
            image = split.image(index)
            if batch and (len(batch) == size or image.shape != batch[0].shape):
                yield torch.stack(batch)
                batch = []
            batch.append(image)
        if batch:
            yield torch.stack(batch)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        try:
            for images, labels in self.loader:
                images = images.to(self.device, non_blocking=True, memory_format=layout)
                yield images, labels.to(self.device, non_blocking=True)
        except DataError as err:
            # A worker's error arrives wrapped in its traceback; keep the one line that says why.
            last = str(err).strip().splitlines()[-1]
            raise DataError(last.split("DataError: ", 1)[-1]) from None


def sample_transforms(
    augment: AugmentConfig | None, spec: InputSpec, stored: tuple[int, ...]
) -> list[Callable]:
    """The per-sample (PIL) twin of `Batches.transform`, for the streamed loader."""
    from torchvision import transforms as T  # only the streamed path needs it (1.4 s to import)

    mode = T.InterpolationMode(spec.interpolation)
    steps: list[Callable] = []
    if augment is None:
        if spec.resize:
            steps += [T.Resize(spec.resize, interpolation=mode), T.CenterCrop(spec.size)]
        elif tuple(stored) != spec.size:
            steps.append(T.Resize(spec.size, interpolation=mode))
    elif augment.kind == "random_resized_crop":
        steps.append(T.RandomResizedCrop(spec.size, augment.scale, augment.ratio, mode))
    else:
        if augment.pad:
            steps.append(T.RandomCrop(tuple(stored), padding=augment.pad, padding_mode="reflect"))
        if tuple(stored) != spec.size:
            steps.append(T.Resize(spec.size, interpolation=mode))
    if augment is not None and augment.hflip:
        steps.append(T.RandomHorizontalFlip())
    return [*steps, T.ToTensor(), T.Normalize(spec.mean, spec.std)]


def _stream(
    data: Prepared,
    split: str,
    batch_size: int,
    augment: AugmentConfig | None,
    runtime: Runtime,
    seed: int,
    spec: InputSpec,
) -> StreamBatches:
    s = data.splits[split]
    steps = sample_transforms(augment, spec, data.image_shape[1:])
    procs = world()
    generator = torch.Generator().manual_seed(seed)
    sampler = GlobalBatchSampler(
        len(s.labels), batch_size, augment is not None, generator, procs.rank, procs.size
    )
    loader = DataLoader(
        _Images(s, _Compose(steps)),
        batch_sampler=sampler,
        num_workers=runtime.workers,
        generator=generator,
        pin_memory=runtime.device.type == "cuda",
        persistent_workers=runtime.workers > 0,
    )
    labels = s.labels.to(runtime.device)
    return StreamBatches(loader, sampler, labels, runtime.device, runtime.channels_last)


BatchSource = Batches | StreamBatches  # iterable of (images, labels); len(); .labels; .num_images


def make_batches(
    data: Prepared,
    split: str,
    batch_size: int,
    augment: AugmentConfig | None,
    runtime: Runtime,
    seed: int,
    spec: InputSpec | None = None,
) -> BatchSource:
    """Batches of one split for `runtime` (device, layout, loader); augment=None: evaluation.

    `spec` is what the network reads (normalisation, input size, evaluation resize); without
    one, the data's own statistics at the stored size. Under torchrun, training batches are
    global: each process gets batch_size / processes rows.
    """
    spec = spec or data.input_spec()
    procs = world()
    if augment is not None and batch_size % procs.size:
        raise ConfigError(
            f"batch_size {batch_size} does not split evenly over {procs.size} "
            f"processes; make it a multiple of the process count"
        )
    if runtime.loader == "stream" or not data.splits[split].in_memory:
        return _stream(data, split, batch_size, augment, runtime, seed, spec)
    device = runtime.device
    s = data.splits[split]
    c = len(spec.mean)
    return Batches(
        images=s.images.to(device),
        labels=s.labels.to(device),
        spec=spec,
        mean=torch.tensor(spec.mean, device=device).view(1, c, 1, 1),
        std=torch.tensor(spec.std, device=device).view(1, c, 1, 1),
        batch_size=batch_size,
        augment=augment,
        generator=torch.Generator(device="cpu").manual_seed(seed),
        channels_last=runtime.channels_last,
        rank=procs.rank,
        world_size=procs.size,
    )
