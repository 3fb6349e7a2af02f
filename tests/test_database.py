"""The predictor's database builder: real relaxations, phonopy phonons and the INS engine with
ASE's EMT as the teacher (seconds per entry); resuming after SIGKILL, local processes and a Dask
LocalCluster must all give the entries of one serial run, and a build from the teacher records
alone (a fresh checkout) must give them without calling the teacher."""

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from ase.build import bulk
from ase.io import write

from mlff_ins.errors import InputError
from mlff_ins.predict import database
from mlff_ins.predict.database import (RECORD_ARRAYS, TEACHER_ARRAYS, BuildOptions,
                                       SpectraOptions, build_database, done_keys, entry_name,
                                       entry_spectra, export_records, parts_dir,
                                       phonopy_of_entry, read_database, read_records,
                                       record_keys, respectra, supercell_for)
from mlff_ins.predict.sources import iter_structures, substitute, substitutions

HERE = Path(__file__).resolve().parent
EMT_YAML = HERE.parent / "mlff_ins" / "configs" / "label" / "emt.yaml"
# a coarse, small grid: every array stays the same code path at a fraction of the cost
SMALL = SpectraOptions(mesh=12.0, e_max_meV=60.0, e_step_meV=0.5, q_max=6.0, q_step=0.5,
                       e_max_2d_meV=60.0, e_step_2d_meV=2.0, n_directions=8)


def _structures(tmp_path):
    """Five EMT crystals (elements, an L1_2 alloy) and Fe, which EMT lacks (a failed entry)."""
    frames = [bulk(s, "fcc", a) for s, a in (("Al", 4.05), ("Cu", 3.61), ("Ni", 3.52),
                                              ("Ag", 4.09))]
    cu3au = bulk("Cu", "fcc", 3.75, cubic=True)
    cu3au[0].symbol = "Au"
    frames += [cu3au, bulk("Fe", "bcc", 2.87)]
    path = tmp_path / "crystals.xyz"
    write(path, frames)
    return path


def _opts(teacher=EMT_YAML):
    return BuildOptions(teacher=str(teacher), spectra=SMALL, supercell_length_A=7.0,
                        max_supercell_atoms=64)


def _entries(db):
    _, entries = read_database(db, status=None)
    return {e["key"]: e for e in entries}


def _assert_same(a, b, float32_forces=False):
    """Equal keys, statuses and arrays. ``float32_forces``: ``b`` was rebuilt from teacher
    records, whose forces are float32 (relative rounding 2**-24 = 6e-8 of each force). Force
    constants are linear in the forces (FC ~ F / 0.01 Å), so they move by ~6e-8 of the largest
    one (measured: 2e-8); frequencies by half that relatively (the lowest mode, measured: 8e-8
    THz), and the spectra, smooth functions of the frequencies, by less (measured: 3e-9 of their
    maximum; S(Q,E) is float32 itself: one float32 step). The tolerance, 1e-6 of each array's
    largest value (1e-6 THz for the lowest mode), leaves a factor 12 or more over the rounding
    and is far below anything physical."""
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key]["status"] == b[key]["status"], key
        for name in ("cell", "positions", "force_constants", "dos", "vision", "tosca", "sqe",
                     "lowest_THz"):
            if name not in a[key]:
                continue
            x, y = np.asarray(a[key][name], float), np.asarray(b[key][name], float)
            if float32_forces and name not in ("cell", "positions"):
                tol = 1e-6 if name == "lowest_THz" else 1e-6 * np.abs(x).max()
                np.testing.assert_allclose(y, x, rtol=0, atol=tol, err_msg=f"{key} {name}")
            else:
                # the same arithmetic in another process: equal up to BLAS summation order
                np.testing.assert_allclose(x, y, rtol=1e-7, atol=1e-9, err_msg=f"{key} {name}")


def _records(db):
    return Path(db).parent / "records.h5"


@pytest.fixture(scope="module")
def serial_db(tmp_path_factory):
    """The serial build, keeping teacher records (``--records``) beside it."""
    tmp = tmp_path_factory.mktemp("db")
    structures = list(iter_structures(str(_structures(tmp)), max_atoms=8))
    db = tmp / "serial.h5"
    summary = build_database(structures, db, _opts(), progress=False, records=_records(db))
    return db, structures, summary


def test_serial_build_stores_physical_entries(serial_db):
    db, structures, summary = serial_db
    assert summary["added"] == 6 and summary["ok"] == 5 and summary["failed"] == 1
    grids, entries = read_database(db, status=None)
    by_formula = {e["formula"]: e for e in entries}
    fe = by_formula["Fe"]
    assert fe["status"] == "failed" and "Fe" in fe["message"]      # EMT has no Fe: the reason
    e_step = SMALL.e_step_meV
    for e in entries:
        if e["status"] != "ok":
            continue
        n_el = len(e["elements"])
        assert e["dos_partial"].shape == (n_el, len(grids["energy_meV"]))
        # the DOS is per atom with area 3 (every mode of these metals lies below 60 meV)
        assert e["dos"].sum() * e_step == pytest.approx(3.0, abs=1e-6)
        counts = {el: _symbols(e).count(el) for el in e["elements"]}
        for el, part in zip(e["elements"], e["dos_partial"]):
            assert part.sum() * e_step == pytest.approx(3.0 * counts[el] / len(e["numbers"]),
                                                        abs=1e-6)
        assert e["sqe"].shape == (len(grids["q_invA"]), len(grids["energy_2d_meV"]))
        assert e["vision"].max() > 0 and e["tosca"].max() > 0
        assert float(e["lowest_THz"]) > 0                       # stable fcc crystals
    # the L1_2 alloy keeps its 4-atom primitive cell and both partials
    assert set(by_formula["AuCu3"]["elements"]) == {"Au", "Cu"}


def _symbols(e):
    from ase.data import chemical_symbols

    return [chemical_symbols[n] for n in e["numbers"]]


def test_stored_force_constants_give_back_the_spectra(serial_db, tmp_path):
    """respectra on the stored force constants with the same options equals the build's arrays;
    at 300 K the one-phonon S(E) grows by the Bose factor (n+1) at low energy."""
    db, _, _ = serial_db
    same = tmp_path / "same.h5"
    respectra(db, same, SMALL, progress=False)
    _assert_same(_entries(db), _entries(same))
    # its build settings go with it: a build into the output with another supercell is refused
    from dataclasses import replace

    with pytest.raises(InputError, match="supercell_length_A"):
        build_database([], same, replace(_opts(), supercell_length_A=9.0), progress=False)
    # an entry's phonopy object rebuilt from the file gives the stored DOS directly too
    al = next(e for e in _entries(db).values() if e["formula"] == "Al")
    again = entry_spectra(phonopy_of_entry(al), SMALL)
    np.testing.assert_allclose(again["dos"], al["dos"], rtol=1e-10, atol=1e-12)


def test_respectra_keeps_every_setting_it_is_not_told_to_change(serial_db, tmp_path, capsys):
    """`database respectra -T 300` recomputes at 300 K on the database's own grids; a later
    respectra that changes only a grid keeps the 300 K (it once fell back to 10 K)."""
    from dataclasses import replace

    from mlff_ins.cli import main
    from mlff_ins.predict.database import stored_spectra_options

    db, _, _ = serial_db
    assert stored_spectra_options(db) == SMALL
    hot, finer = tmp_path / "hot.h5", tmp_path / "finer.h5"
    assert main(["database", "respectra", str(db), "-T", "300", "-o", str(hot)]) == 0
    assert "temperature_K 10 -> 300" in capsys.readouterr().out
    assert stored_spectra_options(hot) == replace(SMALL, temperature_K=300.0)
    assert main(["database", "respectra", str(hot), "--e-step", "1", "-o", str(finer)]) == 0
    assert stored_spectra_options(finer) == replace(SMALL, temperature_K=300.0, e_step_meV=1.0)
    with h5py.File(finer, "r") as f:
        np.testing.assert_allclose(f["grids/energy_meV"][()], np.arange(61.0))   # 0-60 meV
    assert main(["database", "respectra", str(db), "--q-step", "0", "-o",
                 str(tmp_path / "bad.h5")]) == 2
    assert "--q-step: must be positive" in capsys.readouterr().err


def test_kill_and_resume_loses_and_duplicates_nothing(serial_db, tmp_path):
    db_ref, structures, _ = serial_db
    src = _structures(tmp_path)
    slow = tmp_path / "slow.yaml"
    slow.write_text("calculator: slow_emt:SlowEMT\nparameters: {delay_s: 0.05}\n")
    db = tmp_path / "killed.h5"
    env = dict(os.environ, PYTHONPATH=f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    records = tmp_path / "records.h5"
    cmd = [sys.executable, "-m", "mlff_ins.cli", "database", "build", "--structures", str(src),
           "--teacher", str(slow), "-o", str(db), "--max-atoms", "8",
           "--supercell-length", "7", "--max-supercell-atoms", "64", "--consolidate-every", "2",
           "--records", str(records)]
    # the CLI's grids are the defaults; compare against a serial run of the same options
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(done_keys(db)) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = done_keys(db)
    n_before = len(done)
    assert 3 <= n_before < 6, "the kill must land mid-run"
    # the records file is whole, every saved entry has its record (written first) and at most
    # the entry in flight has a record but no part yet; no key twice
    recorded = _record_key_list(records)
    assert len(recorded) == len(set(recorded)) and done <= set(recorded)
    assert len(set(recorded) - done) <= 1
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert f"{n_before} were done before" in res.stdout
    assert f"{len(set(recorded) - done)} entries rebuilt from it without the teacher" \
        in res.stdout
    assert not list(parts_dir(db).glob("*.h5"))                 # everything merged
    with h5py.File(db) as f:
        keys = [str(g.attrs["key"]) for g in f["entries"].values()]
    assert sorted(keys) == sorted(k for k, _ in structures)     # nothing lost or duplicated
    assert sorted(_record_key_list(records)) == sorted(keys)
    assert not list(tmp_path.glob(".records.h5.*"))              # no temporary file left over
    ref = tmp_path / "ref.h5"
    opts = BuildOptions(teacher=str(EMT_YAML), supercell_length_A=7.0, max_supercell_atoms=64)
    build_database(structures, ref, opts, progress=False)
    _assert_same(_entries(ref), _entries(db), float32_forces=True)


def _record_key_list(path):
    """Every record's key, as stored (a name that is not its key's hash would be a bug)."""
    with h5py.File(path, "r") as f:
        out = [str(g.attrs["key"]) for g in f["records"].values()]
        assert all(name == entry_name(str(g.attrs["key"])) for name, g in f["records"].items())
    return out


def test_records_alone_rebuild_the_database_without_the_teacher(serial_db, tmp_path,
                                                                 monkeypatch):
    """A fresh checkout: no db.h5, no parts, the committed records file. The same build
    command rebuilds every entry from the records, the teacher is called zero times, and the
    entries equal those the teacher's build wrote (to the float32 rounding of the forces)."""
    db_ref, structures, _ = serial_db
    records = tmp_path / "records.h5"
    records.write_bytes(_records(db_ref).read_bytes())
    # what a record holds: float32 forces; the failed entry only its key, status and message
    recs = {r["key"]: r for r in read_records(records)}
    assert sorted(recs) == sorted(k for k, _ in structures)
    for r in recs.values():
        if r["status"] == "failed":
            assert sorted(r) == ["key", "message", "status"] and "Fe" in r["message"]
        else:
            assert set(RECORD_ARRAYS) <= set(r) and r["forces"].dtype == np.float32
            assert r["forces"].shape == (len(r["displacements"]),
                                         round(abs(np.linalg.det(r["supercell_matrix"])))
                                         * len(r["numbers"]), 3)
    # `database info` reads a records file too: the same counts and elements as the database
    from mlff_ins.predict.database import database_summary

    info, info_db = database_summary(records), database_summary(db_ref)
    assert f"teacher records of {len(structures)} entries (" in info and "1 failed" in info
    elements_line = next(x for x in info_db.splitlines() if x.startswith("elements"))
    assert elements_line in info.splitlines()
    calls = []

    def no_teacher(*args, **kwargs):
        calls.append(args)
        raise AssertionError("the teacher was called")

    monkeypatch.setattr(database, "load_teacher", no_teacher)
    monkeypatch.setattr(database, "compute_entry", no_teacher)
    db = tmp_path / "db.h5"
    summary = build_database(structures, db, _opts(), progress=False, records=records)
    assert calls == []
    assert summary["restored"] == summary["added"] == 6 and summary["failed"] == 1
    assert records.read_bytes() == _records(db_ref).read_bytes()   # nothing to add to it
    _assert_same(_entries(db_ref), _entries(db), float32_forces=True)
    fe = next(e for e in _entries(db).values() if e["status"] == "failed")
    assert fe["formula"] == "Fe" and "Fe" in fe["message"]         # named from the source
    # and once more: everything is there, nothing is rebuilt twice
    again = build_database(structures, db, _opts(), progress=False, records=records)
    assert again["added"] == 0 and again["skipped_done"] == 6 and calls == []
    # one records file holds one teacher's work: another teacher is refused before any work
    from dataclasses import replace

    with pytest.raises(InputError, match="records made with the teacher calculator"):
        build_database(structures, tmp_path / "db2.h5", replace(_opts(), teacher="sevennet-0"),
                       progress=False, records=records)
    assert not (tmp_path / "db2.h5").exists() and calls == []
    # the records keep the relaxation and supercell settings they were made with: restoring
    # them into a build with other settings is refused (its new entries would differ)
    from mlff_ins.predict.database import records_build_options

    assert records_build_options(records) == {"relax": True, "fmax": 5e-3, "relax_steps": 300,
                                              "supercell_length_A": 7.0,
                                              "max_supercell_atoms": 64,
                                              "retry_supercell_length_A": 13.5}
    with pytest.raises(InputError, match="its records were computed with supercell_length_A"):
        build_database(structures, tmp_path / "db3.h5", replace(_opts(), supercell_length_A=9.0),
                       progress=False, records=records)
    assert not (tmp_path / "db3.h5").exists() and calls == []
    # a database goes on with the settings it was started with: another teacher, temperature or
    # supercell is refused before any work (the file would say one and hold the other)
    before = db.read_bytes()
    for other, needle in ((replace(_opts(), teacher="sevennet-0"), "built with the teacher"),
                          (replace(_opts(), spectra=replace(SMALL, temperature_K=300.0)),
                           "temperature_K"),
                          (replace(_opts(), supercell_length_A=9.0), "supercell_length_A")):
        with pytest.raises(InputError, match=needle):
            build_database(structures, db, other, progress=False)
    assert db.read_bytes() == before and calls == []
    # an HDF5 file that is no database is not written into
    alien = tmp_path / "alien.h5"
    with h5py.File(alien, "w") as f:
        f["x"] = 1
    with pytest.raises(InputError, match="not a database"):
        build_database(structures, alien, _opts(), progress=False)
    with h5py.File(alien) as f:
        assert list(f) == ["x"]


def test_records_export_from_a_database(serial_db, tmp_path):
    """`database records DB -o FILE` writes the records the build kept; a database without the
    displacement data (built before records existed) is refused with that reason."""
    from mlff_ins.cli import main

    db_ref, _, _ = serial_db
    out = tmp_path / "exported.h5"
    assert main(["database", "records", str(db_ref), "-o", str(out)]) == 0
    kept = {r["key"]: r for r in read_records(_records(db_ref))}
    exported = {r["key"]: r for r in read_records(out)}
    assert sorted(kept) == sorted(exported)
    for key, r in kept.items():
        for name in RECORD_ARRAYS:
            if name in r:
                np.testing.assert_array_equal(r[name], exported[key][name])
    assert main(["database", "records", str(db_ref), "-o", str(out)]) == 0   # no duplicates
    assert sorted(record_keys(out).values()) == sorted(kept)
    old = tmp_path / "old.h5"
    old.write_bytes(db_ref.read_bytes())
    with h5py.File(old, "a") as f:
        for g in f["entries"].values():
            for name in TEACHER_ARRAYS:
                if name in g:
                    del g[name]
    with pytest.raises(InputError, match="displacement data"):
        export_records(old, tmp_path / "none.h5")
    assert not (tmp_path / "none.h5").exists()


def test_a_record_is_replaced_only_when_asked(serial_db, tmp_path):
    """append_records keeps a key's first record; with replace=True a new one takes its place
    and every other record stays as it was."""
    from mlff_ins.predict.database import append_records

    db_ref, _, _ = serial_db
    path = tmp_path / "records.h5"
    path.write_bytes(_records(db_ref).read_bytes())
    before = {r["key"]: r for r in read_records(path)}
    key = next(k for k, r in before.items() if r["status"] == "ok")
    changed = {**before[key], "forces": np.asarray(before[key]["forces"]) * 1.5}
    assert append_records(path, [changed]) == 0
    np.testing.assert_array_equal(read_records(path, [entry_name(key)])[0]["forces"],
                                  before[key]["forces"])
    assert append_records(path, [changed], replace=True) == 1
    after = {r["key"]: r for r in read_records(path)}
    assert sorted(after) == sorted(before)
    np.testing.assert_array_equal(after[key]["forces"],
                                  np.float32(np.asarray(before[key]["forces"]) * 1.5))
    for k, r in before.items():
        if k != key:
            for name in RECORD_ARRAYS:
                if name in r:
                    np.testing.assert_array_equal(after[k][name], r[name])


def test_local_processes_equal_the_serial_run(serial_db, tmp_path):
    db_ref, structures, _ = serial_db
    db = tmp_path / "workers.h5"
    build_database(structures, db, _opts(), workers=2, progress=False)
    _assert_same(_entries(db_ref), _entries(db))


def test_dask_local_cluster_equals_the_serial_run(serial_db, tmp_path):
    distributed = pytest.importorskip("distributed")
    db_ref, structures, _ = serial_db
    db = tmp_path / "dask.h5"
    # two threads per worker, as `dask worker` and LocalCluster give by default: the tasks of
    # one process share its teacher, and once recorded entries as failed (half-built objects)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=True,
                                  dashboard_address=None) as cluster:
        build_database(structures, db, _opts(), dask=cluster.scheduler_address, progress=False)
    _assert_same(_entries(db_ref), _entries(db))


def test_lowest_mode_leaves_out_the_acoustic_modes_not_an_unstable_optical_one():
    from mlff_ins.predict.database import lowest_mode_THz

    q = [[0, 0, 0], [0.5, 0, 0]]
    stable = [[-1e-4, 2e-5, 3e-4, 5.0, 5.0, 6.0], [1.0, 1.0, 2.0, 5.0, 5.0, 6.0]]
    assert lowest_mode_THz(q, stable) == 1.0
    # a triply degenerate imaginary mode at Γ only (T1u of a cubic perovskite): the three
    # acoustic modes near 0 are left out, the -2 THz mode decides
    t1u = [[-2.0, -2.0, -2.0, -1e-4, 2e-5, 3e-4], [1.0, 1.0, 2.0, 5.0, 5.0, 6.0]]
    assert lowest_mode_THz(q, t1u) == -2.0
    assert lowest_mode_THz([[0.5, 0, 0]], [[-0.4, 1.0, 2.0]]) == -0.4     # no Γ in the mesh


def test_supercell_widths_and_cap():
    al = bulk("Al", "fcc", 4.05)                   # primitive fcc: widths a/sqrt(3) = 2.338 Å
    assert supercell_for(al, 9.0, 1000) == [4, 4, 4]
    n = supercell_for(al, 9.0, 30)
    assert np.prod(n) <= 30 and max(n) - min(n) <= 1
    cube = bulk("Cu", "fcc", 3.61, cubic=True)
    assert supercell_for(cube, 7.0, 1000) == [2, 2, 2]


def test_substitution_keeps_structure_and_scales_volume():
    from ase.data import atomic_numbers, covalent_radii

    nacl = bulk("NaCl", "rocksalt", 5.64)
    kbr = substitute(nacl, {"Na": "K", "Cl": "Br"})
    assert kbr.get_chemical_symbols() == ["K", "Br"]
    r = {s: covalent_radii[atomic_numbers[s]] for s in ("Na", "Cl", "K", "Br")}
    ratio = ((r["K"] / r["Na"]) ** 3 + (r["Br"] / r["Cl"]) ** 3) / 2
    assert kbr.get_volume() / nacl.get_volume() == pytest.approx(ratio, rel=1e-12)
    np.testing.assert_allclose(kbr.get_scaled_positions(), nacl.get_scaled_positions())


def test_substitutions_follow_the_data_mined_probabilities():
    """Rock salt NaCl and rutile SiO2 substituted by the Hautier et al. (2011) probabilities,
    checked against the table itself: the picks are exactly the substitutions (one or both
    sites, same charges) whose sites each have a conditional probability of at least 1 % and
    whose product (a kept site counting its own) is at least the threshold, the most probable
    first (SiO2 -> GeO2 leads, the textbook analogue), round-robin over the prototypes while both
    have picks left, none with H, Be, B or C (what the atomic-number order put first before)."""
    from ase.spacegroup import crystal
    from pymatgen.analysis.structure_prediction.substitution_probability import (
        SubstitutionProbability)
    from pymatgen.core import Species

    from mlff_ins.predict.sources import (EXCLUDED, SITE_PROBABILITY_MIN,
                                          SUBSTITUTION_THRESHOLD)

    nacl = bulk("NaCl", "rocksalt", 5.64)
    rutile = crystal(["Si", "O"], basis=[(0, 0, 0), (0.3, 0.3, 0)], spacegroup=136,
                     cellpar=[4.18, 4.18, 2.67, 90, 90, 90])
    picks = list(substitutions(per_prototype=1000,
                               prototypes=[("NaCl", nacl), ("SiO2", rutile)]))
    keys = [k for k, _ in picks]
    assert len(set(keys)) == len(keys)
    assert keys[1] == "sub:SiO2:Si-Ge"
    charge = {"Na": 1, "Cl": -1, "Si": 4, "O": -2}
    table = SubstitutionProbability()

    def p(old, new):
        return table.cond_prob(Species(old, charge[old]), Species(new, charge[old]))

    expected = {}
    for proto, sites in (("NaCl", ("Cl", "Na")), ("SiO2", ("O", "Si"))):
        options = []
        for old in sites:
            others = [sp.symbol for sp in table.species if sp.oxi_state == charge[old]
                      and sp.symbol != old and sp.symbol not in EXCLUDED and sp.Z <= 83
                      and p(old, sp.symbol) >= SITE_PROBABILITY_MIN]
            options.append([old] + others)
        for new in itertools.product(*options):
            prob = np.prod([p(o, n) for o, n in zip(sites, new)])
            if new != sites and len(set(new)) == 2 and prob >= SUBSTITUTION_THRESHOLD:
                text = ",".join(f"{o}-{n}" for o, n in zip(sites, new) if o != n)
                expected[f"sub:{proto}:{text}"] = prob
    assert set(keys) == set(expected)
    for proto in ("NaCl", "SiO2"):
        probs = [expected[k] for k in keys if k.split(":")[1] == proto]
        assert np.all(np.diff(probs) <= 1e-15), proto
    n = min(sum(k.startswith(f"sub:{x}:") for k in keys) for x in ("NaCl", "SiO2"))
    assert [k.split(":")[1] for k in keys[:2 * n]] == ["NaCl", "SiO2"] * n
    for key, atoms in picks:
        mapping = dict(pair.split("-") for pair in key.split(":")[2].split(","))
        assert not set(mapping.values()) & {"H", "Be", "B", "C"}, key
        old = ("Na", "Cl") if key.split(":")[1] == "NaCl" else ("Si", "O")
        assert set(atoms.get_chemical_symbols()) == {mapping.get(o, o) for o in old}
    capped = [k for k, _ in substitutions(per_prototype=5, prototypes=[("SiO2", rutile)])]
    assert capped == [k for k in keys if k.startswith("sub:SiO2:")][:5]


def test_bad_sources_and_teachers_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="--structures nowhere"):
        list(iter_structures("nowhere"))
    with pytest.raises(InputError, match="--teacher no-such-model"):
        build_database([("bulk:Al", bulk("Al"))], tmp_path / "x.h5",
                       BuildOptions(teacher="no-such-model"), progress=False)
    assert not (tmp_path / "x.h5").exists()


def test_a_build_killed_before_its_first_merge_keeps_its_settings(tmp_path, monkeypatch):
    """Parts written before any merge (a kill before the first, modelled by a merge that does
    nothing) carry the build's settings: a resume with another temperature is refused, naming
    the settings file; the same settings merge them, and a merge's leftover copy of the
    database (a kill mid-merge) is removed."""
    from dataclasses import replace

    db = tmp_path / "db.h5"
    crystals = [("bulk:Al", bulk("Al", "fcc", 4.05)), ("bulk:Cu", bulk("Cu", "fcc", 3.61))]
    monkeypatch.setattr(database, "consolidate", lambda *a, **k: 0)
    build_database(crystals, db, _opts(), progress=False)
    monkeypatch.undo()
    assert not db.exists() and len(list(parts_dir(db).glob("*.h5"))) == 2
    hot = replace(_opts(), spectra=replace(SMALL, temperature_K=300.0))
    with pytest.raises(InputError, match=r"build\.json: its entries were computed with "
                                         r"temperature_K 10\.0 \(now 300\.0\)"):
        build_database(crystals, db, hot, progress=False)
    stale = tmp_path / ".db.h5.x1y2.tmp"
    stale.write_bytes(b"half a copy")
    summary = build_database(crystals, db, _opts(), progress=False)
    assert summary["entries"] == 2 and summary["skipped_done"] == 2 and summary["added"] == 0
    assert not stale.exists() and not list(parts_dir(db).glob("*.h5"))


def test_a_teacher_changed_under_its_name_is_refused(tmp_path):
    """The same teacher path with other content (a calculator YAML edited, as a bundle
    retrained in place or a universal model's package upgraded would be) cannot add entries
    to a database its earlier version built."""
    teacher = tmp_path / "teacher.yaml"
    teacher.write_text(EMT_YAML.read_text())
    db = tmp_path / "db.h5"
    build_database([("bulk:Al", bulk("Al", "fcc", 4.05))], db, _opts(teacher), progress=False)
    teacher.write_text("calculator: emt\nparameters: {asap_cutoff: true}\n")
    with pytest.raises(InputError, match=r"db\.h5: its entries were computed by calculator "
                                         r"emt sha256:\w+; the teacher .* is now calculator "
                                         r"emt sha256:"):
        build_database([("bulk:Cu", bulk("Cu", "fcc", 3.61))], db, _opts(teacher),
                       progress=False)


def test_structure_files_are_keyed_by_their_path_and_content(tmp_path):
    """Files of one name in two folders are two structures; subfolders are read, hidden files
    are not; an edited file is a new key; an empty folder is an error naming it."""
    for sub, crystal in (("a", bulk("Al", "fcc", 4.05)), ("b", bulk("Cu", "fcc", 3.61)),
                         ("c/mp-1", bulk("Ni", "fcc", 3.52))):
        (tmp_path / sub).mkdir(parents=True)
        write(tmp_path / sub / "POSCAR", crystal, format="vasp")
    (tmp_path / "c" / ".hidden").write_text("not a structure")
    keys = dict(iter_structures(f"{tmp_path / 'a'},{tmp_path / 'b'},{tmp_path / 'c'}"))
    assert [a.get_chemical_formula() for a in keys.values()] == ["Al", "Cu", "Ni"]
    assert [k.split("@")[0] for k in keys] == ["file:a/POSCAR", "file:b/POSCAR",
                                                 "file:c/mp-1/POSCAR"]
    write(tmp_path / "a" / "POSCAR", bulk("Al", "fcc", 4.10), format="vasp")
    again = dict(iter_structures(str(tmp_path / "a")))
    assert len(again) == 1 and not set(again) & set(keys)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="--structures .*empty: a folder with no structure"):
        list(iter_structures(str(tmp_path / "empty")))


def test_respectra_refuses_what_it_cannot_recompute(serial_db, tmp_path):
    """Unmerged parts (a build in flight or killed) and an entry without force constants are
    refused, naming the database; a file that is not a records file is one line naming it."""
    import shutil

    db, _, _ = serial_db
    copy = tmp_path / "copy.h5"
    shutil.copyfile(db, copy)
    parts_dir(copy).mkdir()
    (parts_dir(copy) / "x.h5").write_bytes(b"")
    with pytest.raises(InputError, match="copy.h5: entries of a build are still in"):
        respectra(copy, tmp_path / "out.h5", SMALL, progress=False)
    shutil.rmtree(parts_dir(copy))
    with h5py.File(copy, "a") as f:
        name = next(n for n, g in f["entries"].items() if g.attrs["status"] == "ok")
        del f["entries"][name]["force_constants"]
    with pytest.raises(InputError, match="1 entries with spectra but no force constants"):
        respectra(copy, tmp_path / "out.h5", SMALL, progress=False)
    assert not (tmp_path / "out.h5").exists()
    bad = tmp_path / "records.h5"
    bad.write_text("not hdf5")
    with pytest.raises(InputError, match="records.h5: not an HDF5 file"):
        record_keys(bad)


def test_a_second_build_of_one_database_is_refused(tmp_path):
    """While one build holds a database (its lock, as a running `database build` does), another
    build of the same file is refused at once, naming it, and writes nothing."""
    from mlff_ins.atomic_io import exclusive_lock

    db = tmp_path / "db.h5"
    with exclusive_lock(tmp_path / ".db.h5.lock", "held"):
        with pytest.raises(InputError, match=f"{db}: another `database build`"):
            build_database([("Al", bulk("Al", "fcc", 4.05))], db, _opts(), progress=False)
    assert not db.exists() and not parts_dir(db).exists()


def test_substitutions_of_unstable_prototypes_are_left_out(tmp_path):
    """``stable_parents``: substitutions wait until every prototype is built and are computed
    only where their prototype's entry is ok. Simple cubic Cu is unstable under EMT (its
    relaxation keeps the symmetry, the phonons find the imaginary modes), fcc Cu is stable; a
    substitution of a prototype that is in neither the database nor the structures is left out
    too. A build stopped after the prototypes (--limit) goes on from the statuses stored in the
    database."""
    from ase import Atoms

    def simple_cubic(symbol, a):
        return Atoms(symbol, cell=[a, a, a], pbc=True)

    structures = [("aflow:F", bulk("Cu", "fcc", 3.61)), ("aflow:S", simple_cubic("Cu", 2.4)),
                  ("sub:F:Cu-Ni", bulk("Ni", "fcc", 3.52)),
                  ("sub:S:Cu-Ni", simple_cubic("Ni", 2.35)),
                  ("sub:X:Cu-Ag", bulk("Ag", "fcc", 4.09))]
    # substitutions are put last whatever their order in the list
    structures = structures[2:3] + structures[:2] + structures[3:]
    db = tmp_path / "db.h5"
    first = build_database(structures, db, _opts(), progress=False, stable_parents=True,
                           limit=2)
    assert first["added"] == 2 and first["skipped_parent"] == 0
    assert {k: e["status"] for k, e in _entries(db).items()} == {"aflow:F": "ok",
                                                                 "aflow:S": "imaginary"}
    # simple cubic Cu is unstable at the supercell's own q-points, not only in between
    message = _entries(db)["aflow:S"]["message"]
    assert "at the supercell's commensurate q-points" in message
    assert database.INTERPOLATION_NOTE not in message
    second = build_database(structures, db, _opts(), progress=False, stable_parents=True)
    assert second["added"] == 1 and second["ok"] == 1 and second["skipped_parent"] == 2
    assert set(_entries(db)) == {"aflow:F", "aflow:S", "sub:F:Cu-Ni"}
    # without the filter the rest is built (Ag and sc Ni: their EMT entries exist)
    third = build_database(structures, db, _opts(), progress=False)
    assert third["added"] == 2 and set(_entries(db)) == {k for k, _ in structures}
    assert _entries(db)["sub:S:Cu-Ni"]["status"] == "imaginary"


def test_an_imaginary_mode_between_the_supercells_q_points_is_told_apart():
    """bcc Mo as SevenNet-0 made it (the repository's teacher records; 5x5x5 primitive cells):
    imaginary on the interpolated mesh, real at every q-point commensurate with its supercell,
    where phonopy's force constants are exact. Checked against phonopy directly: the
    frequencies at the 125 commensurate q-points (none below -0.3 THz) and on the entry's mesh
    (some below)."""
    import re

    records = HERE.parent / "data" / "predictor" / "teacher_records.h5"
    name = {k: n for n, k in record_keys(records).items()}["bulk:Mo"]
    record = read_records(records, [name])[0]
    entry = database.entry_from_record(record, SpectraOptions())
    assert entry["status"] == "imaginary"
    assert entry["message"].endswith(f"({database.INTERPOLATION_NOTE})")
    mesh_low, commensurate_low = map(float, re.findall(r"-?\d+\.\d+", entry["message"]))
    ph = database.phonopy_of_record(record)
    n = np.diag(np.asarray(record["supercell_matrix"]))
    q = np.array(list(itertools.product(*[np.arange(k) / k for k in n])))
    ph.run_qpoints(q)
    f = ph.qpoints.frequencies
    assert len(q) == 125
    assert np.sort(np.abs(f[0]))[:3].max() < 1e-3           # Γ acoustic
    assert f[1:].min() > -0.3 and commensurate_low == pytest.approx(f[1:].min(), abs=0.005)
    assert mesh_low == pytest.approx(float(entry["lowest_THz"]), abs=0.005) and mesh_low < -0.3


def test_a_wider_supercell_tells_an_instability_from_an_interpolation_artefact():
    """bcc Mo with SevenNet-0 (the default teacher; its weights ship in its wheel): in the
    9 Å supercell (5x5x5) its only imaginary modes lie between the supercell's q-points. The
    build then computes the phonons again in the widest supercell of at least 13.5 Å within
    the 256-atom cap and keeps them: there the instability sits at the supercell's own q-points
    (SevenNet-0 makes bcc Mo unstable, which DFT does not), so the flag stands, now without
    doubt. The record rebuilds the same entry without the teacher."""
    calc, _ = database.load_teacher("sevennet-0")
    mo = bulk("Mo")
    first = database.compute_entry("bulk:Mo", mo, BuildOptions(
        teacher="sevennet-0", retry_supercell_length_A=None), calc)
    assert np.diag(first["supercell_matrix"]).tolist() == [5, 5, 5]
    assert first["status"] == "imaginary"
    assert first["message"].endswith(f"({database.INTERPOLATION_NOTE})")
    opts = BuildOptions(teacher="sevennet-0")
    assert opts.retry_supercell_length_A == 13.5            # the default
    again = database.compute_entry("bulk:Mo", mo, opts, calc)
    relaxed = mo.copy()
    relaxed.cell, relaxed.positions = again["cell"], again["positions"]
    wider = supercell_for(relaxed, 13.5, 256)
    assert np.prod(wider) > 125 and np.prod(wider) <= 256
    assert np.diag(again["supercell_matrix"]).tolist() == wider
    assert again["status"] == "imaginary"
    assert database.INTERPOLATION_NOTE not in again["message"]
    assert "at the supercell's commensurate q-points" in again["message"]
    rebuilt = database.entry_from_record(database.record_of(again), SpectraOptions())
    assert rebuilt["status"] == "imaginary" and rebuilt["message"] == again["message"]
    np.testing.assert_allclose(rebuilt["force_constants"], again["force_constants"],
                               rtol=0, atol=1e-9)
