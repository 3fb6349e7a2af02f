"""The command line as a new user meets it: help with units, the demo, one-line errors."""

import subprocess
import sys

import pytest

from mlff_ins.cli import build_parser, main


@pytest.mark.parametrize("command, unit", [("label", "eV/Å"), ("train", "Å"),
                                           ("check", "eV/Å"), ("demo", "")])
def test_help_states_units(command, unit, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert unit in capsys.readouterr().out


def test_console_script_runs():
    res = subprocess.run([sys.executable, "-m", "mlff_ins.cli", "--version"],
                         capture_output=True, text=True)
    assert res.returncode == 0 and "mlff-ins" in res.stdout


def test_demo_runs_end_to_end(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "demo"), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "labels OK" in out and "forces  MAE" in out
    assert (tmp_path / "demo" / "models" / "si_tiny" / "report.md").exists()
    assert "X TA" in out and "(exp 4.49)" in out
    for name in ("si_phonons.h5", "si_phonons.png", "si_vision.h5", "si_vision.png"):
        assert (tmp_path / "demo" / name).stat().st_size > 0


def test_bad_option_value_is_one_line(tmp_path, capsys):
    assert main(["train", "--data", "x.xyz", "--preset", "tiny", "--ensemble", "0",
                 "-o", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "mlff-ins train: error: --ensemble: must be at least 1 (got 0)"


def test_every_command_listed():
    text = build_parser().format_help()
    for cmd in ("demo", "label", "check", "train"):
        assert cmd in text
