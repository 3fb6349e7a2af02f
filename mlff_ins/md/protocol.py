"""MD protocols from YAML: a sequence of stages run into one trajectory (e.g. melt–quench).

```yaml
dt_fs: 1.0
every: 10
stages:
  - {name: heat,   ensemble: nvt, T_start: 300, T_end: 3000, rate_K_per_ps: 2000}
  - {name: melt,   ensemble: nvt, T: 3000, ps: 5}
  - {name: quench, ensemble: nvt, T_start: 3000, T_end: 300, rate_K_per_ps: 100}
  - {name: anneal, ensemble: npt, T: 300, P_GPa: 0, ps: 5}
  - {name: production, ensemble: nvt, T: 300, ps: 10}
```

A stage lasts ``ps`` picoseconds, or |T_end − T_start| / rate for a ramp (Langevin, the target
temperature moves every frame interval). Stages share one H5MD file and one step counter, so a
killed protocol resumes with ``--resume`` in the stage where it stopped. Any key of
:class:`mlff_ins.md.run.MDOptions` may be given per stage (``thermostat``, ``friction_per_fs``,
``barostat``, ``pressure_GPa``/``P_GPa``, ``tdamp_fs``, ``pdamp_fs``, ...).

Options the user gave on the command line (``given``): a time step or frame interval replaces
the protocol's ``dt_fs``/``every``; a temperature or ensemble is used by the stages that set
none, and is warned about when every stage sets its own (it does nothing); a step count is
refused (the stages set the run's length).
"""

from __future__ import annotations

import warnings
from dataclasses import fields, replace
from pathlib import Path

import yaml

from mlff_ins.errors import InputError
from mlff_ins.md.run import MDOptions, MDSummary, run_md

_STAGE_KEYS = {"name", "ensemble", "T", "T_start", "T_end", "rate_K_per_ps", "ps", "P_GPa"}


def load_protocol(path: str | Path, base: MDOptions,
                  given: frozenset[str] = frozenset()) -> list[tuple[str, MDOptions]]:
    """Stages as (name, options with ``steps`` = the global step at which the stage ends).
    ``given``: the MDOptions fields set explicitly by the user (``base`` holds their values)."""
    path = Path(path)
    if not path.is_file():
        shipped = Path(__file__).resolve().parent.parent / "configs" / "md" / path.name
        for candidate in (shipped, shipped.with_suffix(".yaml")):
            if candidate.is_file():  # `--protocol melt_quench` finds the shipped protocol
                path = candidate
                break
        else:
            raise InputError(f"{path}: no such protocol file (shipped: melt_quench, anneal)")
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise InputError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("stages"), list) or not cfg["stages"]:
        raise InputError(f"{path}: needs a non-empty 'stages:' list")
    option_names = {f.name for f in fields(MDOptions)}
    if "steps" in given:
        raise InputError(f"--steps: the stages of {path} set the run's length; leave it out")
    dt = float(base.dt_fs if "dt_fs" in given else cfg.get("dt_fs", base.dt_fs))
    every = int(base.every if "every" in given else cfg.get("every", base.every))
    for key, flag, own in (("temperature_K", "-T", ("T", "T_start")),
                           ("ensemble", "--ensemble", ("ensemble",))):
        if key in given and all(isinstance(st, dict) and any(k in st for k in own)
                                for st in cfg["stages"]):
            warnings.warn(f"{flag}: every stage of {path} sets its own; {flag} is not used",
                          stacklevel=2)
    out, end = [], 0
    for i, st in enumerate(cfg["stages"]):
        name = str(st.get("name", f"stage{i}")) if isinstance(st, dict) else f"stage{i}"
        if not isinstance(st, dict):
            raise InputError(f"{path}: stage {i} must be a mapping")
        unknown = set(st) - _STAGE_KEYS - option_names
        if unknown:
            raise InputError(f"{path}: stage {name}: unknown key {sorted(unknown)[0]!r}")
        extra = {k: v for k, v in st.items() if k in option_names}
        if "T_start" in st or "T_end" in st:
            if "T_start" not in st or "T_end" not in st:
                raise InputError(f"{path}: stage {name}: a ramp needs both T_start and T_end")
            t0, t1 = float(st["T_start"]), float(st["T_end"])
            if "ps" in st:
                ps = float(st["ps"])
            elif "rate_K_per_ps" in st and float(st["rate_K_per_ps"]) > 0:
                ps = abs(t1 - t0) / float(st["rate_K_per_ps"])
            else:
                raise InputError(f"{path}: stage {name}: give ps or a positive rate_K_per_ps")
            extra.update(temperature_K=t0, temperature_end_K=t1,
                         thermostat=st.get("thermostat", "langevin"))
        else:
            if "ps" not in st:
                raise InputError(f"{path}: stage {name}: give its length in ps")
            ps = float(st["ps"])
            extra.update(temperature_K=float(st.get("T", base.temperature_K)),
                         temperature_end_K=None)
        if "P_GPa" in st:
            extra["pressure_GPa"] = float(st["P_GPa"])
        n = int(round(ps * 1000.0 / dt))
        if n < 1:
            raise InputError(f"{path}: stage {name} is shorter than one step of {dt} fs")
        start, end = end, end + n
        extra.setdefault("ensemble", base.ensemble)
        out.append((name, replace(base, dt_fs=dt, every=every, steps=end, ramp_start_step=start,
                                  stage=name, **extra)))
    return out


def run_protocol(atoms, calc, protocol: str | Path, base: MDOptions, output: str | Path,
                 resume: bool = False, progress: bool = True,
                 given: frozenset[str] = frozenset()) -> list[tuple[str, MDSummary]]:
    """Run every stage into ``output``; stages already finished in a resumed file are skipped.
    ``given``: as :func:`load_protocol`'s."""
    stages = load_protocol(protocol, base, given)
    done = []
    for i, (name, opts) in enumerate(stages):
        if progress:
            print(f"stage {name}: {opts.ensemble}, T {opts.temperature_K:g}"
                  + (f" -> {opts.temperature_end_K:g}" if opts.temperature_end_K is not None
                     else "") + f" K, until step {opts.steps}")
        summary = run_md(atoms, calc, opts, output, resume=resume or i > 0, progress=progress)
        done.append((name, summary))
        if summary.stopped:
            break
    return done
