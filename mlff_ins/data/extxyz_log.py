"""An append-only extxyz file that survives kills: one frame per durable append.

Frames are serialised to a string and appended with a single ``write`` + ``fsync``. A kill can
leave at most one truncated frame at the end; :func:`truncate_incomplete_tail` finds the byte
offset where the last complete frame ends and cuts the file there, so a resumed run neither loses
nor duplicates frames.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import ase.io
from ase import Atoms

from mlff_ins.atomic_io import append_durably


def frame_to_extxyz(atoms: Atoms) -> str:
    """Serialise one frame (with its calculator results) as an extxyz block ending in a newline."""
    buf = io.StringIO()
    ase.io.write(buf, atoms, format="extxyz")
    text = buf.getvalue()
    return text if text.endswith("\n") else text + "\n"


def append_frame(path: str | os.PathLike, atoms: Atoms) -> None:
    """Append one frame durably to the extxyz file at ``path``."""
    append_durably(path, frame_to_extxyz(atoms))


def complete_length(path: str | os.PathLike) -> int:
    """Byte length of the prefix of ``path`` made of complete extxyz frames.

    A frame is complete when its atom-count line, comment line and all its atom lines are present
    and newline-terminated.
    """
    data = Path(path).read_bytes()
    pos = 0
    good = 0
    n = len(data)
    while pos < n:
        end = data.find(b"\n", pos)
        if end < 0:
            break
        head = data[pos:end].strip()
        if not head:  # tolerate blank lines between frames
            pos = end + 1
            good = pos
            continue
        try:
            natoms = int(head)
        except ValueError:
            break
        cursor = end + 1
        ok = True
        for _ in range(natoms + 1):  # comment line + atom lines
            nxt = data.find(b"\n", cursor)
            if nxt < 0:
                ok = False
                break
            cursor = nxt + 1
        if not ok:
            break
        pos = good = cursor
    return good


def truncate_incomplete_tail(path: str | os.PathLike) -> int:
    """Cut a truncated last frame off ``path``; return the number of bytes removed. What follows
    the last complete frame must look like the start of one (an atom count, or one unfinished
    line): anything else (a hand-edited or concatenated file) is an InputError naming the line,
    and nothing is cut, since the frames after it would go with it."""
    from mlff_ins.errors import InputError

    path = Path(path)
    if not path.exists():
        return 0
    size = path.stat().st_size
    keep = complete_length(path)
    if keep < size:
        with open(path, "rb") as fh:
            head = fh.read(keep)
            first = fh.readline()
        if first.endswith(b"\n"):        # a whole line that no frame starts with
            try:
                int(first.strip())
            except ValueError:
                line = head.count(b"\n") + 1
                raise InputError(f"{path}: line {line} is not the atom count of a frame "
                                 f"({first[:60].decode(errors='replace').strip()!r}); the file "
                                 f"was changed by hand or joined from pieces; not cutting it "
                                 f"there (fix or remove that line)") from None
    if keep < size:
        with open(path, "r+b") as fh:
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
    return size - keep


def read_frames(path: str | os.PathLike) -> list[Atoms]:
    """Read all complete frames of an extxyz log (an empty or missing file gives [])."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return []
    return ase.io.read(path, index=":", format="extxyz")
