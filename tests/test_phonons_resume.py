"""A killed `mlff-ins phonons --model` continues where it stopped: the forces of the displaced
supercells and the relaxation done so far are kept in OUTPUT.partial/, a rerun of the same
command uses them (and only those of the same supercells and model), and its result equals
an uninterrupted run's."""

import json

import h5py
import numpy as np
import pytest
from ase.build import bulk
from ase.io import write

import mlff_ins.phonons.partial as partial
from mlff_ins.cli import main
from mlff_ins.model.calculator import BundleCalculator, load_calculator
from mlff_ins.phonons.finite_displacement import (displaced_supercells, make_phonopy,
                                                  relax)
from mlff_ins.phonons.partial import PhononProgress, partial_dir


def rattled_si(seed=3, stdev=0.03):
    """8-atom diamond Si with no symmetry left: 48 displaced supercells (P1, +-)."""
    a = bulk("Si", "diamond", 5.431, cubic=True)
    a.rattle(stdev, seed=seed)
    return a


def stop_after(monkeypatch, calls: int, error=KeyboardInterrupt):
    """Make the ``calls + 1``-th batched model call raise ``error``; returns the call log."""
    real = BundleCalculator.member_forces_batched
    seen = []

    def counted(self, structures, *a, **k):
        if len(seen) == calls:
            raise error("stopped by the test")
        seen.append(len(structures))
        return real(self, structures, *a, **k)

    monkeypatch.setattr(BundleCalculator, "member_forces_batched", counted)
    return seen


def test_stopped_forces_resume_without_lost_or_repeated_work(tiny_bundle, tmp_path,
                                                             monkeypatch):
    calc = load_calculator(tiny_bundle)
    cells = displaced_supercells(make_phonopy(rattled_si(), [1, 1, 1], primitive="P"))
    assert len(cells) == 48
    whole = calc.member_forces_batched(cells, max_batch_atoms=32)     # 4 cells per call
    keep = PhononProgress(tmp_path / "ph.h5", {"model": "tiny"}, log=lambda *_: None)
    seen = stop_after(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        keep.forces(calc, cells, max_batch_atoms=32, save_every_s=1e9)
    # the five finished calls (20 supercells) are on disk although no timed save was due
    assert seen == [4] * 5
    files = sorted(p.name for p in partial_dir(tmp_path / "ph.h5").iterdir())
    assert files == ["forces_0000000_0000020.npy", "key.json"]
    monkeypatch.undo()
    seen = stop_after(monkeypatch, 10 ** 6)
    got = keep.forces(calc, cells, max_batch_atoms=32, save_every_s=0.0)
    # the rest only: 28 supercells in 7 calls; the same numbers as one uninterrupted run
    assert seen == [4] * 7
    np.testing.assert_array_equal(got, whole)


def test_saved_forces_of_other_supercells_or_another_model_are_not_used(tiny_bundle,
                                                                        tmp_path, monkeypatch):
    calc = load_calculator(tiny_bundle)
    notes = []
    cells = displaced_supercells(make_phonopy(rattled_si(), [1, 1, 1], primitive="P"))
    keep = PhononProgress(tmp_path / "ph.h5", {"model": "tiny"}, log=notes.append)
    first = keep.forces(calc, cells[:8], max_batch_atoms=8, save_every_s=0.0)
    # one save per call here (the last included), and a rerun makes no model call
    assert len(list(partial_dir(tmp_path / "ph.h5").glob("forces_*.npy"))) == 8
    seen = stop_after(monkeypatch, 0)
    np.testing.assert_array_equal(keep.forces(calc, cells[:8], max_batch_atoms=8), first)
    assert seen == []
    monkeypatch.undo()
    # the same supercells with another model key: done again, the old files removed
    other = PhononProgress(tmp_path / "ph.h5", {"model": "other"}, log=notes.append)
    again = other.forces(calc, cells[:8], max_batch_atoms=8, save_every_s=0.0)
    np.testing.assert_array_equal(again, first)
    assert notes[0] == f"resumed: the forces of 8 of 8 displaced supercells from {keep.folder}"
    notes = [n for n in notes if n.startswith("note:")]
    assert len(notes) == 1 and "another model" in notes[0]
    # a displacement moved by 1e-9 Å is another calculation too
    moved = [c.copy() for c in cells[:8]]
    moved[3].positions[0, 0] += 1e-9
    other.log = notes.append
    other.forces(calc, moved, max_batch_atoms=8, save_every_s=0.0)
    assert len(notes) == 2 and "other displaced supercells" in notes[1]
    # the folder holds only this module's files; remove() takes them and the folder
    (partial_dir(tmp_path / "ph.h5") / "mine.txt").write_text("a user's file")
    other.remove()
    assert [p.name for p in partial_dir(tmp_path / "ph.h5").iterdir()] == ["mine.txt"]


def test_stopped_relaxation_resumes_from_its_last_structure(tmp_path, monkeypatch):
    calc = load_calculator("si-reference", members=[0])
    start = rattled_si(seed=5, stdev=0.05)
    keep = PhononProgress(tmp_path / "ph.h5", {"model": "si-reference"},
                          log=lambda *_: None)
    # every step saved; stopped at the 4th force evaluation of the relaxation
    monkeypatch.setattr(partial, "SAVE_EVERY_S", 0.0)
    real = type(calc).calculate
    count = [0]

    def stopping(self, *a, **k):
        count[0] += 1
        if count[0] == 4:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(type(calc), "calculate", stopping)
    with pytest.raises(KeyboardInterrupt):
        relax(start, calc, fmax=1e-3, steps=200, keep=keep)
    monkeypatch.setattr(type(calc), "calculate", real)
    record = json.loads((partial_dir(tmp_path / "ph.h5") / "relax.json").read_text())
    assert record["converged"] is False and record["steps"] >= 2
    saved, steps, converged = keep.relax_start(start, 1e-3, True)
    assert steps == record["steps"] and not converged
    # the saved structure is one the relaxation reached: not the start
    assert np.abs(saved.positions - start.positions).max() > 1e-4
    done = relax(start, calc, fmax=1e-3, steps=200, keep=keep)
    done.calc = calc
    assert np.abs(done.get_forces()).max() < 1e-3
    assert json.loads((partial_dir(tmp_path / "ph.h5") / "relax.json").read_text())[
        "converged"] is True
    # a third run takes the relaxed structure as it is, with no model call
    monkeypatch.setattr(type(calc), "calculate", stopping)
    count[0] = -10 ** 6
    again = relax(start, calc, fmax=1e-3, steps=200, keep=keep)
    assert count[0] == -10 ** 6
    # exactly (the saved forces are keyed by the displaced supercells made from it)
    np.testing.assert_array_equal(again.positions, done.positions)
    np.testing.assert_array_equal(again.cell.array, done.cell.array)


def test_cli_phonons_stopped_then_rerun_equals_an_uninterrupted_run(tiny_bundle, tmp_path,
                                                                    monkeypatch, capsys):
    cell = tmp_path / "si8.xyz"
    write(cell, rattled_si())
    argv = ["phonons", str(cell), "--model", str(tiny_bundle), "--supercell", "1", "1", "1",
            "--primitive", "P", "--batch-atoms", "32", "--mesh", "2", "2", "2"]
    assert main(argv + ["-o", str(tmp_path / "whole.h5")]) == 0
    monkeypatch.setattr(partial, "SAVE_EVERY_S", 0.0)
    seen = stop_after(monkeypatch, 3)
    out = tmp_path / "resumed.h5"
    assert main(argv + ["-o", str(out)]) == 130
    assert "interrupted; rerun the same command" in capsys.readouterr().err
    assert not out.exists() and len(list(partial_dir(out).glob("forces_*.npy"))) == 3
    monkeypatch.undo()
    seen = stop_after(monkeypatch, 10 ** 6)
    assert main(argv + ["-o", str(out)]) == 0
    assert "resumed: the forces of 12 of 48 displaced supercells" in capsys.readouterr().out
    assert sum(seen) == 36
    assert not partial_dir(out).exists()
    with h5py.File(tmp_path / "whole.h5") as a, h5py.File(out) as b:
        np.testing.assert_array_equal(a["force_constants"][()], b["force_constants"][()])
        np.testing.assert_array_equal(a["mesh/frequency_THz"][()], b["mesh/frequency_THz"][()])
