"""Crash-safe file writing: whole files appear under their final name only when complete.

Outputs are written to a temporary file in the destination folder and moved into place with
``os.replace`` (atomic on POSIX), so a killed run never leaves a half-written output behind.
Append-only logs (labelled frames) are appended one whole record per ``write`` call followed by
``fsync``; their readers drop an incomplete last record (see ``mlff_ins.data.extxyz_log``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; on success move it onto ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates 0600; give the result the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a new empty folder next to ``path`` (a unique hidden name); on success it replaces
    ``path`` (a folder or nothing), so readers see the old folder whole or the new one whole.
    On an exception the new folder is removed and ``path`` is left untouched. A kill between
    the two renames of the swap leaves the old folder under a hidden ``.NAME.old.*`` name."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_durably(path: str | os.PathLike, text: str) -> None:
    """Append ``text`` in one write call and fsync, so a kill leaves at most one partial record."""
    with open(path, "a") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, busy_message: str):
    """Hold an exclusive advisory lock on the file ``path`` (created if missing) for the
    duration of the ``with`` block; if another process holds it, raise InputError with
    ``busy_message`` at once instead of waiting. The lock goes with the process (a killed run
    leaves nothing to clean up). Where flock is unavailable the block runs unlocked."""
    from mlff_ins.errors import InputError

    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(busy_message) from None
        yield
    finally:
        os.close(fd)        # releases the lock


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB blocks: what keys resumable work and
    provenance to an input file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
