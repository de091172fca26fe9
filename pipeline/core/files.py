"""Atomic file writes and hashes: a crash or bad input never leaves a half-written output.

torch is imported only where tensors are saved or loaded: the torch-free runtime (`sokd predict`)
writes its outputs through this module too."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from pipeline.core.errors import PipelineError


class OutputError(PipelineError):
    """An output path cannot be written: a directory stands there, no permission, disk full."""


def cannot_write(path: Path, err: BaseException) -> OutputError:
    """The one-line error for an output that could not be written (earlier outputs are kept)."""
    lines = str(err).strip().splitlines()
    reason = getattr(err, "strerror", None) or (lines[0] if lines else type(err).__name__)
    return OutputError(
        f"cannot write {path}: {reason}; check that its folder is "
        f"writable and the disk has room (the earlier {path.name}, if any, is unchanged)"
    )


def writable_file(path: Path) -> None:
    """Refuse an output path where a directory stands, before any work is done."""
    if path.is_dir():
        raise OutputError(f"{path} is a directory; give the path of the file to write there")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it is renamed onto `path`, on error removed.

    An OSError while writing (no permission, disk full) becomes one OutputError line.
    """
    writable_file(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise cannot_write(path, err) from None
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; outputs get the usual permissions
        os.replace(tmp, path)
    except OSError as err:
        raise cannot_write(path, err) from None
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
    import torch

    with atomic_path(path) as tmp, tmp.open("wb") as f:
        try:
            torch.save(obj, f)
        except RuntimeError as err:  # torch wraps a failed write (disk full) in RuntimeError
            raise cannot_write(path, err) from None


def sha256_file(path: Path) -> str:
    """Return the hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_tensors(path: Path, error: type[PipelineError], what: str, fix: str) -> Any:
    """torch.load with weights_only=True (never runs pickled code); failures raise `error`."""
    if path.is_dir():
        raise error(f"{path} is a directory, not a {what} file; give the file itself")
    if not path.is_file():
        raise error(f"{what} not found: {path}; {fix}")
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    # A truncated zip, a foreign pickle or random bytes raise many exception types; all mean the
    # same thing to a user: this file is not what it should be.
    except Exception as err:
        raise error(f"cannot read {what} {path}: {_unreadable(err, what)}; {fix}") from None


def _unreadable(err: Exception, what: str) -> str:
    """What a torch.load failure says about the file, in a few words."""
    import pickle

    text = str(err)
    if "global" in text.lower():  # the weights-only unpickler met a class or function to call
        return (
            "it holds pickled Python objects, not only tensors and plain data, and such a "
            "file is never unpickled here (it could run code)"
        )
    damaged = (pickle.UnpicklingError, EOFError, zipfile.BadZipFile)
    if isinstance(err, damaged) or "zip" in text.lower() or "magic number" in text.lower():
        return f"it is truncated, damaged or not a {what} (a file torch.save wrote)"
    first = (text.strip().splitlines() or [type(err).__name__])[0]
    if len(first) > 100:  # cut at a word, never mid-word
        first = first[:100].rsplit(" ", 1)[0] + " ..."
    return f"it is damaged or not a {what} ({first})"


def read_json(path: Path, error: type[PipelineError], what: str, fix: str) -> dict[str, Any]:
    """A JSON object from `path`; a missing, truncated or non-object file raises `error`."""
    if path.is_dir():
        raise error(f"{path} is a directory, not the {what} file; give the file itself")
    if not path.is_file():
        raise error(f"{what} not found: {path}; {fix}")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise error(f"{what} {path} is not valid JSON ({err}); {fix}") from None
    if not isinstance(value, dict):
        raise error(f"{what} {path} holds a JSON {type(value).__name__}, not an object; {fix}")
    return value


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield an empty temp folder beside `path`; on success it replaces `path` whole (what was
    there is removed only then), on error it is removed and `path` is left as it was."""
    with scratch_dir(path.parent, path.name) as tmp:
        new = tmp / "new"
        new.mkdir()
        yield new
        if path.exists():
            path.rename(tmp / "old")  # removed with the scratch folder
        new.rename(path)


@contextlib.contextmanager
def scratch_dir(parent: Path, stage: str) -> Iterator[Path]:
    """A temp folder `.<stage>-<pid>-<random>` in `parent`, removed on exit.

    A process killed by a signal cannot remove its folder: the next run of the stage removes
    every such folder whose process is gone (a live one, from a concurrent run, is left alone).
    """
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for stale in parent.glob(f".{stage}-*-*"):
            if stale.is_dir() and not _alive(stale.name.split("-")[1]):
                shutil.rmtree(stale, ignore_errors=True)
        folder = Path(tempfile.mkdtemp(prefix=f".{stage}-{os.getpid()}-", dir=parent))
    except OSError as err:
        raise cannot_write(parent, err) from None
    try:
        yield folder
    except OSError as err:  # the work inside wrote onto a full disk, say
        raise cannot_write(parent, err) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: str) -> bool:
    if not pid.isdigit():
        return True  # not ours: leave it
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def write_metrics(
    record: Path | None, metrics: Path, report: dict, headline: tuple[str, ...]
) -> None:
    """The whole `report` to `record`, and the keys matching a `headline` pattern (fnmatch) to
    `metrics`: the file DVC declares, so `dvc exp show` shows a few figures per stage while the
    timings, hashes and versions stay in the record. Without a record, `metrics` gets it all."""
    if record is None:
        write_json(metrics, report)
        return
    write_json(record, report)
    write_json(metrics, {k: v for k, v in report.items() if any(fnmatch(k, p) for p in headline)})
