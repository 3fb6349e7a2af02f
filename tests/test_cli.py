"""The command line as a new user meets it: help with units, the demo, one-line errors."""

import subprocess
import sys

import pytest

from mlff_ins.cli import build_parser, main


import argparse
import json
import re

import numpy as np

COMMANDS = ["demo", "label", "check", "train", "build", "md", "select", "deploy", "spectra",
            "phonons", "ins", "database", "compare", "export", "predictor",
            "predict", "thermo", "structure", "serve"]

#: a unit as the help texts write them
UNIT = re.compile(r"(\b(K|fs|ps|meV|eV|GPa|Hz|GiB|GB|amu|minutes|degrees|1/fs|eV/Å|eV/Å²)\b"
                  r"|Å|1/Å)")
#: options that take a number without a unit, and why
DIMENSIONLESS = {"--resolution": "a fraction of Ei", "--lr": "a learning rate",
                 "--weight-decay": "a regularisation strength"}


def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def _all_parsers():
    """(name, parser) of every sub-command, nested ones (database build, ...) included."""
    todo = list(_subparsers().items())
    while todo:
        name, sub = todo.pop(0)
        yield name, sub
        for a in sub._actions:
            if isinstance(a, argparse._SubParsersAction):
                todo.extend((f"{name} {n}", p) for n, p in a.choices.items())


def test_every_command_listed_and_has_help():
    text = build_parser().format_help()
    commands = _subparsers()
    assert sorted(commands) == sorted(COMMANDS)
    for cmd in COMMANDS:
        assert re.search(rf"^\s+{cmd}\s", text, re.M), cmd
        help_text = commands[cmd].format_help()
        assert commands[cmd].description, cmd
        assert f"example: mlff-ins {cmd}" in help_text, cmd


def test_every_nested_command_has_a_description():
    """`mlff-ins database info --help` and the like say what the action does, not only usage."""
    missing = [name for name, sub in _all_parsers() if not sub.description]
    assert missing == []


def test_every_physical_option_states_its_unit():
    """Every option that takes a real number names its unit in its help (or is listed as
    dimensionless with the reason), in every sub-command."""
    missing = []
    for cmd, sub in _all_parsers():
        for a in sub._actions:
            if not a.option_strings or a.type is None:
                continue
            numeric = a.type is float or getattr(a.type, "__name__", "") == "_positive_float"
            if not numeric:
                continue
            name = max(a.option_strings, key=len)
            if name in DIMENSIONLESS:
                assert "fraction" in (a.help or "") or "dimensionless" in (a.help or "")
                continue
            if not UNIT.search(a.help or ""):
                missing.append(f"{cmd} {name}: {a.help}")
    assert not missing, "\n".join(missing)


def test_console_script_runs():
    res = subprocess.run([sys.executable, "-m", "mlff_ins.cli", "--version"],
                         capture_output=True, text=True)
    assert res.returncode == 0 and "mlff-ins" in res.stdout


def test_demo_runs_end_to_end(tmp_path, capsys):
    """The quick demo: training shown, then the shipped reference model through the phonon
    route (crystal) and the MD route (amorphous cell), compared, with a report linking it all."""
    import re

    from mlff_ins.neutron.spectrum import read_spectra

    out_dir = tmp_path / "demo"
    assert main(["demo", "-o", str(out_dir), "--epochs", "1", "--md-steps", "100",
                 "--device", "auto"]) == 0
    out = capsys.readouterr().out
    # --device reaches the training (the preset's is cpu) and every command that runs a model
    bundle = json.loads((out_dir / "models" / "si_tiny" / "bundle.json").read_text())
    assert bundle["settings"]["device"] == "auto"
    for cmd in ("phonons", "md", "spectra"):
        assert re.search(rf"^  \$ mlff-ins {cmd} .*--device auto", out, re.M), cmd
    assert "labels OK" in out and "forces  MAE" in out
    assert (out_dir / "models" / "si_tiny" / "report.md").exists()
    assert "X TA" in out and "(exp 4.49)" in out
    assert "$ mlff-ins phonons" in out and "$ mlff-ins md" in out and "$ mlff-ins compare" in out
    # each step is echoed as a user would type it: the shipped model by its name
    assert "--model si-reference" in out and "reference_model" not in out
    for name in ("c-si/phonons.png", "c-si/ins_phonons.png", "a-si/ins_md.png",
                 "compare/compare.png", "compare/metrics.json"):
        assert (out_dir / name).stat().st_size > 0, name
    report = (out_dir / "report.md").read_text()
    # every link of the report points at a file the demo wrote
    links = re.findall(r"\]\(([^)]+)\)", report)
    assert len(links) == 5 and all((out_dir / link).is_file() for link in links), links
    assert f"report: {out_dir / 'report.md'}" in out

    # the crystal's S(E) is sharper than the amorphous cell's: its highest point stands higher
    # over the spectrum's mean (the amorphous cell's bands are broad)
    def peak_over_mean(path):
        y = read_spectra(path)["s_e"].intensity
        return float(y.max() / y.mean())
    assert (peak_over_mean(out_dir / "c-si" / "ins_phonons.h5")
            > peak_over_mean(out_dir / "a-si" / "ins_md.h5"))


def test_bad_option_value_is_one_line(tmp_path, capsys):
    assert main(["train", "--data", "x.xyz", "--preset", "tiny", "--ensemble", "0",
                 "-o", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "mlff-ins train: error: --ensemble: must be at least 1 (got 0)"


@pytest.mark.parametrize("argv, option", [
    (["spectra", "t.h5md", "--phonon-orders", "3"], "--phonon-orders"),
    (["spectra", "t.h5md", "--debye-waller", "msd"], "--debye-waller"),
    (["spectra", "t.h5md", "--angles", "5", "100"], "--angles"),
    (["spectra", "t.h5md", "--resolution", "0.03"], "--resolution"),
    (["spectra", "t.h5md", "--q-max", "3"], "--q-max"),
    (["spectra", "t.h5md", "--sqe", "--ei", "50", "--fwhm", "1"], "--fwhm"),
    (["spectra", "t.h5md", "--stage", "prod", "--start", "3"], "--stage"),
    (["spectra", "t.h5md", "--skip-ps", "1", "--start", "3"], "--skip-ps"),
    (["ins", "p.h5", "--ei", "100"], "--ei"),
    (["ins", "p.h5", "--directions", "10"], "--directions"),
    (["ins", "p.h5", "--instrument", "direct", "--e-step", "0.2"], "--e-step"),
    (["ins", "p.h5", "--2d", "--ei", "100", "--fwhm", "2"], "--fwhm"),
    (["ins", "p.h5", "--2d", "--chopper-frequency", "250"], "--chopper-frequency"),
])
def test_options_that_would_be_ignored_are_refused(argv, option, tmp_path, capsys):
    """An option with no effect in the mode asked for is an error naming it, before any file
    is read (the input files here do not exist)."""
    assert main(argv + ["-o", str(tmp_path / "out.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and option in err, err
    assert not (tmp_path / "out.h5").exists()


@pytest.mark.parametrize("argv", [
    ["select", "IN", "--top", "1"],
    ["spectra", "IN", "--vdos"],
    ["ins", "IN"],
    ["structure", "IN"],
])
def test_output_over_an_input_is_refused_and_the_input_kept(argv, tmp_path, capsys):
    """-o naming the input file (`select traj.h5md -o traj.h5md` replaced the trajectory by a
    2-frame extxyz, exit 0) is refused before any work: one line naming both, the file intact."""
    src = tmp_path / "in.h5"
    src.write_bytes(b"not looked at")
    argv = [str(src) if a == "IN" else a for a in argv]
    assert main(argv + ["-o", str(tmp_path / "." / "in.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is also the input" in err and str(src) in err, err
    assert src.read_bytes() == b"not looked at"


def test_an_os_error_is_one_line(tmp_path, capsys):
    """A file system error (here: -o under a path that is a file, not a folder) is one line
    naming the path, not a traceback."""
    from ase.build import bulk
    from ase.io import write

    cell = tmp_path / "si.xyz"
    write(cell, bulk("Si", "diamond", a=5.43))
    assert main(["build", str(cell), "--supercell", "1", "1", "1",
                 "-o", str(cell / "x.xyz")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(cell) in err, err


def test_spectra_and_ins_share_their_vocabulary():
    """Options describing the same physics have the same name, unit and default in both."""
    subs = _subparsers()
    opts = {cmd: {next(o for o in a.option_strings if o.startswith("--")): a
                  for a in subs[cmd]._actions if a.option_strings}
            for cmd in ("spectra", "ins")}
    shared = ["--instrument", "--temperature", "--e-max", "--q-min", "--q-max", "--q-step",
              "--directions", "--phonon-orders", "--ei", "--angles", "--resolution",
              "--chopper-frequency", "--chopper-package", "--fwhm", "--isotope", "--seed",
              "--max-memory", "--plot", "--unit"]
    for name in shared:
        a, b = opts["spectra"][name], opts["ins"][name]
        assert a.metavar == b.metavar and a.choices == b.choices, name
        # T = 0 is the ground state for phonons; an MD trajectory has a temperature
        assert a.type == b.type or name == "--temperature", name
    for name in ("--e-max", "--q-max", "--q-step", "--phonon-orders", "--angles",
                 "--max-memory"):
        da, db = (re.search(r"default ([^)]*)\)", opts[c][name].help or "") for c in
                  ("spectra", "ins"))
        assert da and db and da.group(1) == db.group(1), name


def test_spectra_frame_range_and_protocol_stage(tmp_path, capsys):
    """--start/--stop/--step, --skip-ps and --stage choose the frames; -T defaults to the
    kinetic temperature of those frames (a 600 K stage then a 300 K one: each within 5 %; 200
    oscillators x 3 components over 1500-2500 fs with a velocity memory 1/γ = 100 fs give
    ~10⁴ independent samples, a 1.4 % standard error at most)."""
    from mlff_ins.analysis.synthetic import damped_oscillators
    from mlff_ins.data.h5md import H5MDWriter
    from mlff_ins.neutron.spectrum import read_spectra

    hot = damped_oscillators(n=200, frames=150, every=20, h=0.5, mass=12.0, omega0=0.05,
                             gamma=0.01, temperature_K=600.0, seed=7)
    cold = damped_oscillators(n=200, frames=250, every=20, h=0.5, mass=12.0, omega0=0.05,
                              gamma=0.01, temperature_K=300.0, seed=7)
    path = tmp_path / "protocol.h5md"
    with H5MDWriter(path, ["C"] * 200, forces=False) as w:
        for i in range(400):
            stage, (pos, vel, cell) = ("heat", hot) if i < 150 else ("prod", cold)
            k = i if i < 150 else i - 150
            w.append(20 * i, 10.0 * i, pos[k], cell, velocities=vel[k],
                     settings=json.dumps({"stage": stage, "dt_fs": 0.5}))

    def run(*extra):
        out = tmp_path / "s.h5"
        assert main(["spectra", str(path), "-o", str(out), *extra]) == 0
        line = capsys.readouterr().out
        kinetic = float(re.search(r"kinetic ([0-9.]+) K", line).group(1))
        return kinetic, line, read_spectra(out)["vdos"]

    t_prod, line, prod = run("--stage", "prod")
    assert "250 frames (150..399)" in line and t_prod == pytest.approx(300, rel=0.05)
    t_heat, line, _ = run("--stage", "heat")
    assert "150 frames (0..149)" in line and t_heat == pytest.approx(600, rel=0.05)
    t_start, _, by_start = run("--start", "150")
    np.testing.assert_array_equal(by_start.intensity, prod.intensity)
    t_skip, _, by_skip = run("--skip-ps", "1.5")            # 150 frames of 10 fs
    np.testing.assert_array_equal(by_skip.intensity, prod.intensity)
    _, line, _ = run("--start", "150", "--stop", "350", "--step", "2")
    assert "100 frames (150..348)" in line and "dt 20 fs" in line
    assert main(["spectra", str(path), "-o", str(tmp_path / "x.h5"), "--stage", "cool"]) == 2
    assert "has the stages heat, prod" in capsys.readouterr().err
