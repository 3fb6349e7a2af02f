"""HDF5 files from elsewhere (measured data, uploads to the web page) are read as data only.

HDF5 lets a file point outside itself: an external link names another file, a dataset with
external raw storage reads its bytes from any file the process can open, and a virtual dataset
maps other files' datasets. Opened by the server of `mlff-ins serve`, such an upload would
have it read (and send back as "intensities") files of the machine it runs on. Every HDF5 file
a user hands to the package is therefore opened through :func:`open_self_contained`, which
refuses any such reference before a value is read.
"""

from __future__ import annotations

import os
from pathlib import Path

from mlff_ins.errors import InputError


#: the largest dataset read from a file handed in (bytes once read): a few kB of compressed
#: fill values can declare gigabytes
MAX_DATASET_BYTES = 8 * 1024**3


def refuse_outside_references(f, path: str | os.PathLike,
                              max_bytes: int | None = MAX_DATASET_BYTES) -> None:
    """Raise :class:`InputError` naming ``path`` and the object when the open HDF5 file ``f``
    has an external link, a dataset with external raw storage or a virtual dataset, or a
    dataset larger than ``max_bytes`` once read (None: no limit, for files read in pieces,
    such as long trajectories). Soft links stay inside the file and are allowed."""
    import h5py

    def check(name, link):
        # an exception cannot cross h5py's visit: a returned value stops it and is passed on
        if isinstance(link, h5py.ExternalLink):
            return (f"{path}: /{name} is a link to another file ({link.filename}); a file "
                    f"that points outside itself is not read")
        if isinstance(link, h5py.HardLink):
            obj = f[name]
            if isinstance(obj, h5py.Dataset) and (obj.external or obj.is_virtual):
                return (f"{path}: dataset /{name} keeps its values in other files "
                        f"({'virtual' if obj.is_virtual else 'external storage'}); a file "
                        f"that points outside itself is not read")
            if isinstance(obj, h5py.Dataset) and max_bytes is not None \
                    and obj.size * obj.dtype.itemsize > max_bytes:
                return (f"{path}: dataset /{name} holds {obj.size * obj.dtype.itemsize / 2**30:.1f}"
                        f" GiB once read, more than the {max_bytes / 2**30:.3g} GiB read from "
                        f"one dataset here")
        return None

    problem = f.visititems_links(check)
    if problem:
        raise InputError(problem)


def open_self_contained(path: str | os.PathLike, max_bytes: int = MAX_DATASET_BYTES):
    """``path`` opened read-only with h5py, after :func:`refuse_outside_references`; an
    unreadable file is one line naming it."""
    import h5py

    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{path}: not an HDF5 file ({str(exc).splitlines()[0]})") from None
    try:
        refuse_outside_references(f, path, max_bytes)
    except BaseException:
        f.close()
        raise
    return f
