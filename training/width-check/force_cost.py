"""Seconds per force call of member 0 of each bundle on a 512-atom diamond Si cell (one call
to warm up, then the best of 5), side by side: what an MD step of the case study costs.

    python training/width-check/force_cost.py BUNDLE [BUNDLE ...]
"""

import sys
import time

from ase.build import bulk

from mlff_ins.model.calculator import load_calculator

atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(4)
atoms.rattle(0.02, seed=1)
for bundle in sys.argv[1:]:
    calc = load_calculator(bundle, device="cpu", members=[0])
    probe = atoms.copy()
    probe.calc = calc
    times = []
    for i in range(6):
        probe.positions[0, 0] += 1e-3
        t = time.perf_counter()
        probe.get_forces()
        times.append(time.perf_counter() - t)
    print(f"{bundle}: {len(atoms)} atoms, {min(times[1:]):.3f} s per force call (member 0)")
