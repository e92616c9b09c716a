"""Safe file writing: every file the workbench writes goes through here.

* ``atomic_write``: one file, written to a temporary in the same folder, fsynced, renamed; an
  existing file is never replaced unless the caller says ``overwrite=True``.
* ``writer_lock``: one writer per folder, by the operating system's lock (``flock``) on a lock
  file, which the kernel releases when its holder dies: no pid guessing, correct under a race.
  The holder records in the lock file what it may leave behind (its pid and staging folder).
* ``output_set``: a run's files as one set in a held folder; they are staged, then moved into
  place together, so a failed or killed run leaves none of them under its final name.
* ``torch_load``: the one way a torch file is read: weights only, size-capped, one-line errors.

The next writer tidies only what a dead holder recorded: its staging folder (finished when every
file was written, else removed) and the temporaries named with its pid and the workbench's mark.
Nothing else in the folder is touched, whatever its name.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

__all__ = ["reason", "LOCK_NAME", "STAGING_PREFIX", "COMPLETE_MARK", "TEMP_MARK", "atomic_write", "write_json",
           "save_png", "check_writable", "staging_folder", "writer_lock", "output_set", "held_set", "cache_dir",
           "SAFE_TORCH_GLOBALS", "MAX_LOAD_BYTES", "zip_entries", "unpacked_size", "torch_load"]

LOCK_NAME = ".cxr-workbench.lock"
STAGING_PREFIX = ".cxr-workbench-staging-"
COMPLETE_MARK = ".complete"  # in a staging folder: every file is written; moving them in may finish
TEMP_MARK = ".cxr-workbench-"  # temporaries are .<name>.cxr-workbench-<pid>-<random>.tmp


def reason(error: BaseException, limit: int | None = None) -> str:
    """An error's message on one line (a reader's may span several), cut to ``limit`` characters:
    what a one-line refusal quotes of the library that failed."""
    return " ".join(str(error).split())[:limit]


def atomic_write(path: str | os.PathLike, write: Callable[[object], None], mode: str = "wb",
                 overwrite: bool = True) -> Path:
    """Call ``write(fileobj)`` on a temporary file, then rename it to ``path``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (or --overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    # The mark and pid in the name let the next holder of the folder remove a dead writer's temporary.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}{os.getpid()}-", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # a full disk, say: name the file, not only the errno
        Path(tmp).unlink(missing_ok=True)
        raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from None
    except RuntimeError as e:
        Path(tmp).unlink(missing_ok=True)
        if "write" not in str(e):
            raise
        # torch.save's zip writer reports a failed write (a full disk) as an "enforce fail"
        raise OSError(errno.EIO, f"cannot write {path}: {str(e).strip().splitlines()[-1][:160]}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path, obj, overwrite: bool = True) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return atomic_write(path, lambda f: json.dump(obj, f, indent=2, sort_keys=True), "w", overwrite)


def save_png(path, image, overwrite: bool = True) -> Path:
    """Save a PIL image (or a uint8/uint16 array) atomically as PNG."""
    import numpy as np
    from PIL import Image
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    return atomic_write(path, lambda f: img.save(f, format="PNG"), "wb", overwrite)


def check_writable(folder) -> Path:
    """Create ``folder`` if needed and prove we can write there, before any long computation."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"output folder {folder} is a file; expected a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ValueError(f"output folder {folder} is not writable ({e.strerror or e})") from None
    return folder


def _finish(staging: Path, folder: Path) -> None:
    """Move every staged file into ``folder`` and drop the staging folder."""
    for f in staging.iterdir():
        if f.name != COMPLETE_MARK:
            os.replace(f, folder / f.name)
    shutil.rmtree(staging, ignore_errors=True)


def _read_record(fd: int) -> dict:
    """What the lock file says of its (last) holder; {} when empty or unreadable."""
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _take_lock(path: Path, folder: Path) -> int:
    """An open descriptor of ``path`` holding its exclusive flock, or FileExistsError naming the holder.

    A holder removes the lock file before it lets go, so a descriptor locked after that names a file
    no longer in the folder: it is dropped and the lock taken again on the file that is there now.
    """
    for _ in range(1000):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_record(fd)
            os.close(fd)
            raise FileExistsError(f"output folder {folder} is being written by another run (pid "
                                  f"{holder.get('pid', '?')} on {holder.get('host', '?')}); wait for it to "
                                  "finish") from None
        try:
            linked = os.stat(path)
        except FileNotFoundError:
            linked = None
        held = os.fstat(fd)
        if linked is not None and (linked.st_ino, linked.st_dev) == (held.st_ino, held.st_dev):
            return fd
        os.close(fd)
    raise FileExistsError(f"output folder {folder}: could not take {path}")


def _tidy_after(folder: Path, record: dict) -> None:
    """Finish or remove what a dead holder recorded, and remove its marked temporaries."""
    staging = record.get("staging")
    if isinstance(staging, str) and staging.startswith(STAGING_PREFIX) and "/" not in staging:
        leftover = folder / staging
        if (leftover / COMPLETE_MARK).is_file():
            _finish(leftover, folder)  # a dead run had written everything: complete its set
        elif leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
    pid = record.get("pid")
    if isinstance(pid, int) and pid > 0:
        for tmp in folder.rglob(f".*{TEMP_MARK}{pid}-*.tmp"):
            tmp.unlink(missing_ok=True)


def staging_folder(folder) -> Path:
    """Where this process stages an output set in ``folder`` (recorded in the lock file it holds)."""
    return Path(folder) / f"{STAGING_PREFIX}{os.getpid()}"


@contextlib.contextmanager
def writer_lock(folder) -> Iterator[Path]:
    """Hold ``folder`` for this process: a second writer is refused, naming the holder; after a
    holder that died, what it recorded is tidied first (see the module docstring)."""
    folder = check_writable(folder)
    path = folder / LOCK_NAME
    fd = _take_lock(path, folder)
    try:
        previous = _read_record(fd)
        record = dict(pid=os.getpid(), host=socket.gethostname(), staging=staging_folder(folder).name)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)
        if previous:
            _tidy_after(folder, previous)
        yield folder
    finally:
        path.unlink(missing_ok=True)  # before letting go: see _take_lock
        os.close(fd)


@contextlib.contextmanager
def output_set(folder, names: Iterable[str], overwrite: bool = False) -> Iterator[Path]:
    """Write the files ``names`` into ``folder`` as one set.

    Yields a staging folder; write each file there under its final name. On a normal exit the
    files are moved into ``folder`` together; on an error none is. Refused up front when the
    folder is not writable, is held by another writer, or already holds one of the files (unless
    ``overwrite``).
    """
    with writer_lock(folder) as folder, held_set(folder, names, overwrite) as staging:
        yield staging


@contextlib.contextmanager
def held_set(folder, names: Iterable[str], overwrite: bool = False) -> Iterator[Path]:
    """``output_set`` in a folder this process already holds (``writer_lock``): a training run
    writes each snapshot's files this way."""
    names, folder = list(names), Path(folder)
    clash = [str(folder / n) for n in names if (folder / n).exists()]
    if clash and not overwrite:
        raise FileExistsError(f"{', '.join(clash)} exist; pass --overwrite or choose another output folder")
    staging = staging_folder(folder)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        missing = [n for n in names if not (staging / n).is_file()]
        if missing:
            raise RuntimeError(f"output set in {folder}: {missing} were not written")
        (staging / COMPLETE_MARK).touch()
        _finish(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def cache_dir() -> Path:
    """Where computed PCAs, directions and CT slab models are kept (``CXR_WORKBENCH_CACHE``, else
    ``~/.cache/cxr_workbench``)."""
    return Path(os.environ.get("CXR_WORKBENCH_CACHE") or Path.home() / ".cache" / "cxr_workbench")


# rosinality's train.py saves its argparse.Namespace under "args": plain data, safe to rebuild.
SAFE_TORCH_GLOBALS = [argparse.Namespace]


MAX_LOAD_BYTES = 8 * 2 ** 30  # a torch file holding more than this, unpacked, is refused before loading


def zip_entries(path) -> list | None:
    """The entries (``zipfile.ZipInfo``) of a zip file such as a torch file; None when it is not one
    or its directory is damaged."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as z:
            return z.infolist()
    # ValueError: a damaged name that does not decode; NotImplementedError: a zip version or method
    # that zipfile does not know, as a damaged header declares
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError):
        return None


def unpacked_size(path) -> int | None:
    """The bytes a torch zip file unpacks to, from its directory (None: not a zip file)."""
    entries = zip_entries(path)
    return None if entries is None else sum(i.file_size for i in entries)


def torch_load(path, what: str = "checkpoint", max_bytes: int = MAX_LOAD_BYTES) -> object:
    """``torch.load(weights_only=True)`` (plus SAFE_TORCH_GLOBALS), quietly; any failure is one
    ValueError naming the ``what`` and file, never a suggestion to load unsafely. A file that
    declares more than ``max_bytes`` unpacked is refused before anything is unpacked."""
    size = unpacked_size(path)
    if size is not None and size > max_bytes:
        raise ValueError(f"{what} {path} unpacks to {size:,} bytes; expected at most {max_bytes:,}")
    try:
        with torch.serialization.safe_globals(SAFE_TORCH_GLOBALS), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols are not the user's business
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, not a torch file, objects we do not rebuild ...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        reason = "it holds objects other than tensors and plain data" if "weights_only" in str(e) else first[:120]
        raise ValueError(f"{what} {path} could not be read as a weights-only torch file ({reason})") from None
