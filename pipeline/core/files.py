"""Atomic file writes and hashes: a crash or bad input never leaves a half-written output."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from pipeline.core.errors import PipelineError


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it is renamed onto `path`, on error removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; outputs get the usual permissions
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` as indented JSON, atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def copy_file(source: Path, path: Path) -> None:
    """Copy `source` to `path` atomically (same bytes, so the same SHA-256)."""
    with atomic_path(path) as tmp:
        shutil.copyfile(source, tmp)


def save_tensors(path: Path, obj: Any) -> None:
    """torch.save `obj` to `path` atomically, the same bytes for the same content.

    torch names the folder inside its zip archive after the file it is given: saved straight to
    the random temp path, equal content gave different bytes (and DVC hashes) every run. Through
    a file object the folder is torch's fixed "archive".
    """
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        torch.save(obj, f)


def sha256_file(path: Path) -> str:
    """Return the hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_tensors(path: Path, error: type[PipelineError], what: str, fix: str) -> Any:
    """torch.load with weights_only=True (never runs pickled code); failures raise `error`."""
    if not path.is_file():
        raise error(f"{what} not found: {path}; {fix}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    # A truncated zip, a foreign pickle or random bytes raise many exception types; all mean the
    # same thing to a user.
    except Exception as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
        raise error(
            f"cannot read {what} {path} ({reason}); it is damaged or not a {what}: {fix}"
        ) from None
