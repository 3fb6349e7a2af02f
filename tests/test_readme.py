"""The README's walk-through runs as written.

Convention: a fenced code block of README.md (```bash, ```console, ```sh or ```python) whose first
line is ``# walk-through`` belongs to the walk-through. Such blocks use only data shipped in the
repository (``mlff_ins/resources``, ``tests/data``, ``configs``) and run in README order, each
from where the one before left its files. Every other block is illustrative and is not run.

How a block runs:

- shell blocks are cut into commands: comment lines are dropped, lines ending in ``\\`` are joined
  to the next, and a ``$ `` prompt (```console) is stripped. Each command runs with ``bash -c`` in
  one temporary folder in which ``mlff_ins``, ``configs`` and ``tests`` are links to the
  repository's, so the README's paths (relative to the repository root) resolve and the outputs
  land in the temporary folder. Each must exit with status 0.
- python blocks run as one ``python -c`` in the same folder, and must exit with status 0.

To stay within a few minutes on 2 CPU cores the test makes the runs small through SUBSTITUTIONS,
an explicit table of textual replacements (fewer epochs and MD steps, a 2-atom cell for the one
CP2K frame, 31 of the embedded frames for the training); nothing else is changed.
A failure prints the README command, the command as run, the substitutions applied and the end of
its output. Every entry of the table must be used, so that a README edit cannot leave it stale.
The commands run with ``OMP_NUM_THREADS=1`` unless the caller sets it: with the models this
small, two torch threads gain nothing, and on a 2-core machine shared with anything else they
made a training epoch ten times slower (16 s against 1.7 s, measured). Commands that need CP2K
(``cp2k_si.yaml``) are skipped, with a printed note, where ``cp2k_shell.psmp`` is not installed
(``scripts/install.sh`` installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
MARKER = "# walk-through"
SHELL_LANGS = {"bash", "console", "sh"}

#: (README text, text as run): applied in order to every walk-through command; each must match
SUBSTITUTIONS: list[tuple[str, str]] = [
    # labelling: one CP2K frame of a rattled 2-atom cell (~10 s) instead of the embedded frames'
    # first, the isolated atom in a 12 Å box (~75 s); tests/test_label.py checks the physics of
    # the same settings on an 8-atom cell
    ("mlff_ins/resources/si/si_frames_unlabelled.xyz --calculator",
     "tests/data/structures/si2_rattled.xyz --calculator"),
    # training: one epoch per member instead of the tiny preset's 30, on the isolated atom and
    # the first 30 frames of the embedded data (tests/data/si_cp2k_pbe_first30.xyz, written from
    # si_cp2k_pbe.xyz as tests/conftest.py's subset) instead of all 155
    ("--data mlff_ins/resources/si/si_cp2k_pbe.xyz --preset tiny --ensemble 2",
     "--data tests/data/si_cp2k_pbe_first30.xyz --preset tiny --ensemble 2 --epochs 1"),
    # MD: 40 + 20 steps instead of 1000 + 1000
    ("--steps 1000", "--steps 40"),
    ("--steps 2000", "--steps 60"),
]

#: every task of the walk-through must appear in it
TASKS = ("label", "check", "train", "build", "md", "select", "spectra", "phonons", "ins",
         "compare", "export", "predict", "deploy")

#: longest time one command may take (s); the whole walk-through takes about 2-3 minutes
COMMAND_TIMEOUT_S = 600


def walkthrough_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block whose first line is the walk-through marker."""
    blocks = []
    for m in re.finditer(r"^```(\w+)[ \t]*\n(.*?)^```[ \t]*$", text, re.MULTILINE | re.DOTALL):
        lang, body = m.group(1), m.group(2)
        lines = body.splitlines()
        if lines and lines[0].strip() == MARKER:
            blocks.append((lang, body))
    return blocks


def shell_commands(body: str) -> list[str]:
    """The commands of a shell block: comments dropped, continuations joined, prompts stripped."""
    commands, current = [], ""
    for raw in body.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if not current and line.startswith("$ "):
            line = line[2:]
        if line.endswith("\\"):
            current += line[:-1].rstrip() + " "
            continue
        current += line
        commands.append(current.strip())
        current = ""
    if current:
        commands.append(current.strip())
    return commands


def substitute(command: str, used: set[int]) -> tuple[str, list[str]]:
    """Apply SUBSTITUTIONS; returns the command as run and the replacements made."""
    applied = []
    for i, (old, new) in enumerate(SUBSTITUTIONS):
        if old in command:
            command = command.replace(old, new)
            used.add(i)
            applied.append(f"{old!r} -> {new!r}")
    return command, applied


def steps() -> list[tuple[str, str, str, list[str]]]:
    """(kind, README text, text to run, substitutions) of every walk-through step, in order."""
    used: set[int] = set()
    out = []
    for lang, body in walkthrough_blocks(README.read_text(encoding="utf-8")):
        if lang in SHELL_LANGS:
            for cmd in shell_commands(body):
                run, applied = substitute(cmd, used)
                out.append(("shell", cmd, run, applied))
        elif lang == "python":
            out.append(("python", body, body, []))
        else:
            raise AssertionError(f"README: a {lang!r} block is marked {MARKER!r}; "
                                 f"only {sorted(SHELL_LANGS | {'python'})} blocks can be run")
    unused = [SUBSTITUTIONS[i] for i in range(len(SUBSTITUTIONS)) if i not in used]
    assert not unused, f"substitutions that match no README walk-through command: {unused}"
    return out


def table() -> str:
    return "substitution table (README text -> as run):\n" + "\n".join(
        f"  {old!r} -> {new!r}" for old, new in SUBSTITUTIONS)


def test_walkthrough_covers_every_task():
    commands = [cmd for kind, cmd, _, _ in steps() if kind == "shell"]
    tasks = {cmd.split()[1] for cmd in commands if cmd.startswith("mlff-ins ")}
    missing = [t for t in TASKS if t not in tasks]
    assert not missing, f"README walk-through has no `mlff-ins {missing}` command"
    for cmd in commands:  # MDAnalysis picks its H5MD reader by the .h5md extension
        if cmd.startswith("mlff-ins md "):
            assert re.search(r"-o \S+\.h5md\b", cmd), f"MD trajectory not named *.h5md: {cmd}"


def test_readme_walkthrough_runs(tmp_path):
    for name in ("mlff_ins", "configs", "tests"):
        (tmp_path / name).symlink_to(REPO / name, target_is_directory=True)
    env = dict(os.environ, MPLBACKEND="Agg")
    env.setdefault("OMP_NUM_THREADS", "1")   # see the module docstring
    print(f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']}")
    have_cp2k = shutil.which("cp2k_shell.psmp") is not None
    print(table())
    start = time.perf_counter()
    for kind, readme_text, run, applied in steps():
        if kind == "shell" and "cp2k" in run and not have_cp2k:
            print(f"SKIPPED (cp2k_shell.psmp not installed): {run}")
            continue
        argv = ["bash", "-c", run] if kind == "shell" else [sys.executable, "-c", run]
        t0 = time.perf_counter()
        proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
                              timeout=COMMAND_TIMEOUT_S)
        took = time.perf_counter() - t0
        print(f"[{took:6.1f} s] {run if kind == 'shell' else '(python block)'}")
        if proc.returncode != 0:
            output = (proc.stdout + proc.stderr)[-4000:]
            pytest.fail(
                f"README walk-through step failed with exit status {proc.returncode}\n"
                f"README:  {readme_text}\n"
                f"as run:  {run}\n"
                f"substitutions applied: {applied or 'none'}\n{table()}\n"
                f"--- end of its output ---\n{output}", pytrace=False)
    print(f"walk-through: {time.perf_counter() - start:.1f} s in all")
