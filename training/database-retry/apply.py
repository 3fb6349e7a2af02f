"""Replace the records of the entries that retry.py found stable in a wider supercell.

Each such entry of retry.jsonl is computed again exactly as there (SevenNet-0, its recorded
relaxed cell, the widest supercell of at least 13.5 Å within 256 atoms) and, when it is stable
again, its record in data/predictor/teacher_records.h5 is replaced by the new one (displacements
and forces of the wider supercell; append_records(replace=True), the file rewritten and moved
into place). A database rebuilt from the records then holds them as ok entries. Run from the
repository root: nice -n 19 python training/database-retry/apply.py
"""
import json
from pathlib import Path

import torch
from ase import Atoms

from mlff_ins.predict.database import (BuildOptions, append_records, compute_entry, entry_name,
                                       load_teacher, read_records)

torch.set_num_threads(1)
RECORDS = "data/predictor/teacher_records.h5"
rows = [json.loads(line) for line in Path(__file__).with_name("retry.jsonl").open()]
keys = [r["key"] for r in rows if r["status"] == "ok"]
calc, _ = load_teacher("sevennet-0")
entries = []
for r in read_records(RECORDS, [entry_name(k) for k in keys]):
    atoms = Atoms(numbers=r["numbers"], cell=r["cell"], positions=r["positions"], pbc=True)
    e = compute_entry(r["key"], atoms, BuildOptions(
        teacher="sevennet-0", relax=False, supercell_length_A=13.5, max_supercell_atoms=256,
        retry_supercell_length_A=None), calc)
    print(r["key"], e["status"], e["message"], flush=True)
    if e["status"] == "ok":
        e["seconds"] = float(r.get("seconds", 0.0) or 0.0) + e["seconds"]
        entries.append(e)
print(f"{RECORDS}: {append_records(RECORDS, entries, replace=True)} records replaced")
