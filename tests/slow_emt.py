"""ASE's EMT with a fixed delay per calculation, so a labelling subprocess can be killed mid-run.

It is the real EMT potential (energies and forces are EMT's); only the timing is changed. With
``closed_marker`` it writes that file when closed, as a calculator that runs a process (CP2K's
shell) must be when the labelling stops.
"""

import time
from pathlib import Path

from ase.calculators.emt import EMT


class SlowEMT(EMT):
    def __init__(self, delay_s: float = 0.3, closed_marker: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.delay_s = delay_s
        self.closed_marker = closed_marker

    def calculate(self, *args, **kwargs):
        time.sleep(self.delay_s)
        super().calculate(*args, **kwargs)

    def close(self):
        if self.closed_marker:
            Path(self.closed_marker).write_text("closed\n")
