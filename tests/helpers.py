"""Generated datasets in the real on-disk formats, and small shared builders, for the tests."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

FASHION_CLASSES = 10


def learnable_images(n: int, side: int, channels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, side, side, C); class k is a bright square at its own place."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, FASHION_CLASSES, n)
    images = rng.integers(0, 60, (n, side, side, channels), dtype=np.uint8)
    cell = side // 4
    for i, k in enumerate(labels):
        r, c = divmod(int(k) % 8, 4)
        images[i, r * cell * 2 : r * cell * 2 + cell, c * cell : c * cell + cell] = 220
        if k >= 8:  # classes 8 and 9 add a second square so every class is distinct
            images[i, -cell:, -cell:] = 250 if k == 9 else 160
    return images, labels.astype(np.int64)


def _write_idx(path: Path, array: np.ndarray) -> None:
    """IDX (MNIST) format: magic with dtype 0x08 (ubyte) and rank, big-endian dims, raw bytes."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_fashion_mnist(raw: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Write the four IDX files where torchvision's FashionMNIST reads them."""
    target = raw / "FashionMNIST" / "raw"
    target.mkdir(parents=True, exist_ok=True)
    for prefix, n, s in (("train", n_train, seed), ("t10k", n_test, seed + 1)):
        images, labels = learnable_images(n, 28, 1, s)
        _write_idx(target / f"{prefix}-images-idx3-ubyte", images[..., 0])
        _write_idx(target / f"{prefix}-labels-idx1-ubyte", labels)
    return raw


def write_cifar(raw: Path, variant: str, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Write CIFAR-10/100 in the python pickle layout torchvision reads."""
    if variant == "cifar10":
        folder, train_files, test_file, meta_file = (
            "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)],
            "test_batch",
            "batches.meta",
        )
        label_key, names_key, num_classes = "labels", "label_names", 10
    else:
        folder, train_files, test_file, meta_file = "cifar-100-python", ["train"], "test", "meta"
        label_key, names_key, num_classes = "fine_labels", "fine_label_names", 100
    root = raw / folder
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def dump(name: str, n: int) -> None:
        rows = rng.integers(
            0, 256, (n, 3 * 32 * 32), dtype=np.uint8
        )  # channel-major rows, as CIFAR
        entry = {"data": rows, label_key: rng.integers(0, num_classes, n).tolist()}
        with (root / name).open("wb") as f:
            pickle.dump(entry, f, protocol=2)

    per_file = -(-n_train // len(train_files))
    for name in train_files:
        dump(name, per_file)
    dump(test_file, n_test)
    with (root / meta_file).open("wb") as f:
        pickle.dump({names_key: [f"c{i}" for i in range(num_classes)]}, f, protocol=2)
    return raw


def write_image_folder(
    root: Path, classes: list[str], per_class: int, size: int, seed: int = 0
) -> Path:
    """Write `root/<class>/<i>.png` RGB images of `size` x `size` (real PNG files)."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
            pixels[: size // 2, :, k % 3] = 230
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def write_bomb_png(path: Path, side: int = 20000) -> Path:
    """A valid PNG whose header declares side x side grey pixels (Pillow's decompression-bomb
    check refuses it on open, before any pixel is decoded), in a few dozen bytes."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\0" * (side + 1))  # one row; the rest would follow in a real file
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )
    return path
