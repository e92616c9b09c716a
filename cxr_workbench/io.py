"""Safe file writing: every file the workbench writes goes through here.

* ``atomic_write``: one file, written to a temporary in the same folder, fsynced, renamed; an
  existing file is never replaced unless the caller says ``overwrite=True``.
* ``output_set``: a run's files as one set, in a folder that one writer holds at a time
  (a lock file naming the process); they are staged, then moved into place together, so a
  failed or killed run leaves none of them under its final name. Leftovers of dead runs
  (locks, staging folders, temporaries) are cleaned up by the next writer.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator

LOCK_NAME = ".cxr-workbench.lock"
STAGING_PREFIX = ".staging-"
COMPLETE_MARK = ".complete"  # in a staging folder: every file is written; moving them in may finish


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def atomic_write(path: str | os.PathLike, write: Callable[[object], None], mode: str = "wb",
                 overwrite: bool = True) -> Path:
    """Call ``write(fileobj)`` on a temporary file, then rename it to ``path``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (or --overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    # The pid in the name lets clean_stale_temporaries tell a dead writer's file from a live one's.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def clean_stale_temporaries(folder) -> list[Path]:
    """Remove ``atomic_write`` temporaries in ``folder`` whose writing process is gone."""
    removed = []
    for p in Path(folder).glob(".*.tmp"):
        parts = p.name.rsplit(".", 3)  # [".name", pid, random, "tmp"]
        if len(parts) == 4 and parts[1].isdigit() and not _alive(int(parts[1])):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def write_json(path, obj, overwrite: bool = True) -> Path:
    return atomic_write(path, lambda f: json.dump(obj, f, indent=2, sort_keys=True), "w", overwrite)


def save_png(path, image, overwrite: bool = True) -> Path:
    """Save a PIL image (or a uint8/uint16 array) atomically as PNG."""
    from PIL import Image
    import numpy as np
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


@contextlib.contextmanager
def writer_lock(folder) -> Iterator[Path]:
    """Hold ``folder`` for this process: a second writer is refused with the holder's pid; a lock
    left by a dead process is taken over after its leftovers are tidied (see module docstring)."""
    folder = check_writable(folder)
    lock = folder / LOCK_NAME
    me = f"{os.getpid()} {socket.gethostname()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            try:
                pid_text, _, host = lock.read_text().partition(" ")
                pid = int(pid_text)
            except (OSError, ValueError):
                pid, host = -1, ""
            if pid > 0 and (host.strip() != socket.gethostname() or _alive(pid)):
                raise FileExistsError(f"output folder {folder} is being written by another run (pid {pid} on "
                                      f"{host.strip() or '?'}); wait for it, or remove {lock} if that run is gone")
            lock.unlink(missing_ok=True)  # the holder is dead
    else:
        raise FileExistsError(f"output folder {folder}: could not take {lock}")
    with os.fdopen(fd, "w") as f:
        f.write(me)
    try:
        for staging in folder.glob(STAGING_PREFIX + "*"):
            pid = staging.name[len(STAGING_PREFIX):]
            if pid.isdigit() and not _alive(int(pid)):
                if (staging / COMPLETE_MARK).exists():
                    _finish(staging, folder)  # a dead run had written everything: complete its set
                else:
                    shutil.rmtree(staging, ignore_errors=True)
        clean_stale_temporaries(folder)
        yield folder
    finally:
        lock.unlink(missing_ok=True)


@contextlib.contextmanager
def output_set(folder, names: Iterable[str], overwrite: bool = False) -> Iterator[Path]:
    """Write the files ``names`` into ``folder`` as one set.

    Yields a staging folder; write each file there under its final name. On a normal exit the
    files are moved into ``folder`` together; on an error none is. Refused up front when the
    folder is not writable, is held by another writer, or already holds one of the files (unless
    ``overwrite``).
    """
    names = list(names)
    with writer_lock(folder) as folder:
        clash = [str(folder / n) for n in names if (folder / n).exists()]
        if clash and not overwrite:
            raise FileExistsError(f"{', '.join(clash)} exist; pass --overwrite or choose another output folder")
        staging = folder / f"{STAGING_PREFIX}{os.getpid()}"
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
