"""One ensemble member in one process: ``nequip-train``, then ``nequip-package`` of its best
(else last) checkpoint, without a second Python start.

    python -m mlff_ins.train.member_process PACKAGE_TMP -- NEQUIP_TRAIN_ARGS...

The driver starts this instead of ``python -m nequip.scripts.train`` followed by
``python -m nequip.scripts.package build`` when a member trains in a single process (no DDP):
importing nequip, torch and e3nn takes 5-10 s on 2 cores, as long as a tiny member's whole
training, and the separate packaging process paid it a second time. The package is written to
PACKAGE_TMP; the driver moves it into place (``model.nequip.zip``, which marks the member
finished), so a kill during the packaging leaves the member unfinished and ``--resume`` packages
it again. Multi-process (DDP) members keep the two separate commands: Lightning re-executes the
training command for its extra ranks, which must not package.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2 or argv[1] != "--":
        raise SystemExit("usage: python -m mlff_ins.train.member_process PACKAGE_TMP -- "
                         "NEQUIP_TRAIN_ARGS...")
    package_tmp, train_args = Path(argv[0]), argv[2:]
    member_dir = Path.cwd()          # the driver starts this process in the member's folder
    # hydra reads the command line of the process: hand it nequip-train's arguments only
    sys.argv = [sys.argv[0], *train_args]
    from nequip.scripts.train import main as train_main

    train_main()
    # nequip.scripts.package sets up its own console log at import: drop hydra's handlers of
    # the training first, or every line would be written to train.log twice
    logging.getLogger().handlers.clear()
    ckpt = member_dir / "best.ckpt"
    if not ckpt.exists():
        ckpt = member_dir / "last.ckpt"
    from nequip.scripts.package import main as package_main

    package_main(["build", str(ckpt), str(package_tmp)])


if __name__ == "__main__":
    main()
