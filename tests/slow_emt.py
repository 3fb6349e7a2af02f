"""ASE's EMT with a fixed delay per calculation, so a labelling subprocess can be killed mid-run.

It is the real EMT potential (energies and forces are EMT's); only the timing is changed.
"""

import time

from ase.calculators.emt import EMT


class SlowEMT(EMT):
    def __init__(self, delay_s: float = 0.3, **kwargs):
        super().__init__(**kwargs)
        self.delay_s = delay_s

    def calculate(self, *args, **kwargs):
        time.sleep(self.delay_s)
        super().calculate(*args, **kwargs)
