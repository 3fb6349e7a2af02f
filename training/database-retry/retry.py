"""The first 409 database entries' imaginary flags in a wider supercell (2026-12-03).

Every entry of data/predictor/teacher_records.h5 flagged imaginary whose modes are real at
every q-point commensurate with its supercell (imaginary on the interpolated mesh only) is
computed again with SevenNet-0 from its relaxed cell (no relaxation) in the widest supercell of
at least 13.5 Å within 256 atoms, as `database build --retry-supercell-length 13.5` now does for
new entries. One JSON line per entry to retry.jsonl (resumable: keys there are skipped); the
records file is not changed. Run from the repository root:
    nice -n 19 python training/database-retry/retry.py
The first six lines of retry.jsonl were written before the message of a mesh-only flag got its
present wording, and two of them (ABC3_hR10_161_a_a_b, A_hP6_194_h) were recomputed in the same
supercell before the script skipped entries without a wider one.
"""
import json
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from mlff_ins.predict.database import (BuildOptions, commensurate_lowest_THz, compute_entry,
                                       load_teacher, phonopy_of_record, read_records,
                                       record_keys, supercell_for)

torch.set_num_threads(1)
RECORDS = "data/predictor/teacher_records.h5"
OUT = Path(__file__).with_name("retry.jsonl")
WIDTH, CAP = 13.5, 256
done = {json.loads(line)["key"] for line in OUT.open()} if OUT.exists() else set()
calc, _ = load_teacher("sevennet-0")
with OUT.open("a") as out:
    for r in read_records(RECORDS, list(record_keys(RECORDS))):
        if r["status"] != "imaginary" or r["key"] in done:
            continue
        if commensurate_lowest_THz(phonopy_of_record(r)) < -0.3:
            continue                              # unstable at the supercell's own q-points
        atoms = Atoms(numbers=r["numbers"], cell=r["cell"], positions=r["positions"], pbc=True)
        first = np.diag(r["supercell_matrix"]).tolist()
        row = {"key": r["key"], "first_sc": first}
        if np.prod(supercell_for(atoms, WIDTH, CAP)) <= np.prod(first):
            row.update(wider_sc=None, status="no wider supercell under the cap")
        else:
            t0 = time.time()
            e = compute_entry(r["key"], atoms, BuildOptions(
                teacher="sevennet-0", relax=False, supercell_length_A=WIDTH,
                max_supercell_atoms=CAP, retry_supercell_length_A=None), calc)
            row.update(wider_sc=np.diag(e["supercell_matrix"]).tolist(), status=e["status"],
                       message=e["message"], seconds=time.time() - t0)
        print(json.dumps(row), file=out, flush=True)
        print(row["key"], row["first_sc"], row["wider_sc"], row["status"], flush=True)
