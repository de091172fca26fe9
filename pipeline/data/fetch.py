"""Obtain a raw dataset into `data/raw/<dataset>`: the `fetch` stage, whose output DVC tracks.

Fashion-MNIST comes from Debian's `dataset-fashion-mnist` package when apt is usable (offline-safe),
else from torchvision's download. CIFAR needs a network or a copy placed by hand. An image folder is
the user's own and lives outside DVC's outputs (`prepare.folder`): DVC empties or restores a stage's
outputs when it checks out an experiment, so the user's photos must never be one; the stage mirrors
them with hard links. Every path ends in one clear line on failure. A second run skips what is
present.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from pathlib import Path

from pipeline.core.errors import DataError
from pipeline.core.files import atomic_dir, atomic_path

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _apt_install(package: str) -> bool:
    """Install a Debian package when we are root and apt-get exists; True on success."""
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

    def apt(*args: str) -> bool:
        cmd = ["apt-get", *args]
        return (
            subprocess.run(
                cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            ).returncode
            == 0
        )

    # A fresh machine has no package lists yet: update only when the first install fails.
    return apt("install", "-y", "-qq", package) or (
        apt("update", "-qq") and apt("install", "-y", "-qq", package)
    )


def fetch_fashion_mnist(raw: Path) -> str:
    """Put the four gunzipped IDX files where torchvision's FashionMNIST reads them."""
    target = raw / "FashionMNIST" / "raw"
    if all((target / name).is_file() for name in FASHION_FILES):
        return f"Fashion-MNIST already in {target}"
    if not DEBIAN_DIR.is_dir():
        _apt_install("dataset-fashion-mnist")
    if all((DEBIAN_DIR / f"{name}.gz").is_file() for name in FASHION_FILES):
        target.mkdir(parents=True, exist_ok=True)
        for name in FASHION_FILES:
            # torchvision reads the files gunzipped; links to the .gz files are not enough.
            with (
                gzip.open(DEBIAN_DIR / f"{name}.gz", "rb") as src,
                atomic_path(target / name) as tmp,
                tmp.open("wb") as dst,
            ):
                shutil.copyfileobj(src, dst)
        return f"Fashion-MNIST copied from {DEBIAN_DIR} to {target}"
    from torchvision.datasets import FashionMNIST

    try:
        FashionMNIST(str(raw), train=True, download=True)
        FashionMNIST(str(raw), train=False, download=True)
    except Exception as err:  # no network, proxy, HTTP error: the fix is the same
        raise DataError(
            f"cannot obtain Fashion-MNIST ({type(err).__name__}: {str(err)[:100]}); install the "
            f"Debian package dataset-fashion-mnist or put the IDX files in {target}"
        ) from None
    return f"Fashion-MNIST downloaded to {target}"


def fetch_cifar(name: str, raw: Path) -> str:
    """Download CIFAR-10/100 with torchvision (md5-checked), unless it is already there."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = {"cifar10": CIFAR10, "cifar100": CIFAR100}[name]
    if (raw / cls.base_folder).is_dir():
        return f"{name} already in {raw / cls.base_folder}"
    try:
        cls(str(raw), train=True, download=True)
    except Exception as err:
        raise DataError(
            f"cannot download {name} ({type(err).__name__}); put the extracted "
            f"'{cls.base_folder}' folder in {raw}"
        ) from None
    return f"{name} downloaded to {raw}"


def _link(source: str, target: Path) -> None:
    """A hard link (no second copy of the photo), or a copy across file systems."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def mirror_folder(source: Path, raw: Path) -> str:
    """The image files of `source/{train,val}/<class>/` as a plain tree in `raw`, swapped in whole.

    The files taken are those `prepare` takes (links followed, each file once, `._*` skipped), so
    the mirror holds no link DVC could loop on. In a queued experiment's copy of the repository,
    `source` is there only if git or DVC tracks it; else the mirror DVC restored is used as is.
    """
    from pipeline.data.datasets import image_files

    if not ((source / "train").is_dir() and (source / "val").is_dir()):
        if (raw / "train").is_dir() and (raw / "val").is_dir():
            return f"{source} is not here; using {raw} as DVC restored it"
        raise DataError(
            f"put your images in {source}/train/<class>/ and {source}/val/<class>/ (one folder "
            f"per class), or name their folder in prepare.folder"
        )
    count = 0
    with atomic_dir(raw) as tmp:
        for split in ("train", "val"):
            for path in image_files(source / split):
                _link(os.path.realpath(path), tmp / split / Path(path).relative_to(source / split))
                count += 1
    return f"{count} images of {source} mirrored into {raw}"


def fetch(dataset: str, raw: Path, folder: Path) -> str:
    """Make dataset `dataset` available under `raw` (an image folder from `folder`); return what
    was done."""
    if dataset == "fashion_mnist":
        return fetch_fashion_mnist(raw)
    if dataset in ("cifar10", "cifar100"):
        return fetch_cifar(dataset, raw)
    if dataset == "imagefolder":
        return mirror_folder(folder, raw)
    raw.mkdir(parents=True, exist_ok=True)  # `fake` generates its images in `prepare`
    (raw / "README.txt").write_text(f"{dataset}: images are generated by `prepare`\n")
    return f"{dataset} needs no files"
