"""Model bundles that ship inside the package, by name.

``--model si-reference`` (and ``load_calculator("si-reference")``) means the silicon reference
ensemble in ``mlff_ins/resources/si/reference_model/``, wherever pip put the package. A folder
of that name in the working directory wins over the shipped bundle.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

RESOURCES = Path(__file__).resolve().parent.parent / "resources"

#: name -> bundle folder inside the package
SHIPPED = {"si-reference": RESOURCES / "si" / "reference_model"}


def resolve_model(name: str | os.PathLike) -> str | os.PathLike:
    """The folder of a shipped bundle when ``name`` is one of :data:`SHIPPED` (and no such path
    exists here); anything else unchanged."""
    if isinstance(name, str) and name.lower() in SHIPPED and not Path(name).exists():
        return str(SHIPPED[name.lower()])
    return name


def shown_name(arg: str) -> str:
    """``arg`` as a user would type it: the name of a shipped bundle for its folder."""
    try:
        here = Path(arg).resolve()
    except (OSError, ValueError):
        return arg
    for name, folder in SHIPPED.items():
        if here == folder.resolve():
            return name
    return arg


def bundle_digest(folder: str | os.PathLike) -> str | None:
    """The first 16 hex digits of the SHA-256 of a bundle's ``bundle.json`` (which a new export
    rewrites: its metrics and training record change), the identity by which an MD run or a
    study tells a model from a later version in the same folder; None when ``folder`` (a shipped
    name resolved) holds no bundle, as a universal potential's name."""
    path = Path(resolve_model(str(folder))) / "bundle.json"
    if not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
