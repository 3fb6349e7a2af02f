"""Universal potentials by name (`--model sevennet-0`): the weights come from the wheel, the
calculator has the bundle calculator's interface, and the phonon route runs with it."""

from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from mlff_ins.cli import main
from mlff_ins.errors import InputError
from mlff_ins.model.calculator import load_calculator

DATA = Path(__file__).parent / "data" / "phonopy"


@pytest.fixture(scope="module")
def sevennet():
    return load_calculator("sevennet-0")


def test_universal_model_by_name(sevennet):
    """SevenNet-0 loads offline from its wheel; energies, forces and stress of a rattled Si cell
    come out; the batched-forces interface equals single calls; an unknown name or element is
    one line."""
    assert sevennet.bundle["universal"] == "sevennet-0" and sevennet.bundle["package"] == "sevenn"
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.02, seed=1)
    atoms.calc = sevennet
    forces = atoms.get_forces()
    assert np.isfinite(atoms.get_potential_energy()) and forces.shape == (8, 3)
    assert abs(forces.sum(axis=0)).max() < 1e-4           # momentum conservation
    assert atoms.get_stress().shape == (6,)
    # nequip sets torch's global default dtype to float64 when imported: the float32 universal
    # models must run regardless, and leave the default as they found it
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        again = atoms.copy()
        again.calc = sevennet
        assert again.get_potential_energy() == pytest.approx(atoms.get_potential_energy(),
                                                             abs=1e-6)
        assert torch.get_default_dtype() == torch.float64
    finally:
        torch.set_default_dtype(old)
    batched = sevennet.member_forces_batched([atoms, atoms])
    np.testing.assert_allclose(batched, np.stack([forces, forces])[None], atol=1e-5)
    with pytest.raises(InputError, match="not a model bundle folder nor a model name "
                                         r"\(shipped: si-reference; universal: sevennet-0"):
        load_calculator("sevennet-9")
    og = bulk("Og", "fcc", a=5.0)
    with pytest.raises(InputError, match="element Og is not known to the universal model"):
        sevennet.check_elements(og)


def test_phonons_with_a_universal_model(tmp_path, capsys):
    """`phonons --model sevennet-0` on MgO at the DFT geometry: the highest mode lies within
    15 % of the DFT force set's without Born charges (a universal PBE model against PBE DFT)."""
    from mlff_ins.phonons.finite_displacement import phonons_from_force_sets
    from mlff_ins.phonons.io import read_phonons

    out = tmp_path / "mgo.h5"
    assert main(["phonons", str(DATA / "MgO" / "POSCAR-unitcell"), "--model", "sevennet-0",
                 "--supercell", "2", "2", "2", "--mesh", "6", "6", "6", "-o", str(out)]) == 0
    model = read_phonons(out).members[0]
    dft = phonons_from_force_sets(DATA / "MgO", nac=False).members[0]
    q = [[0.5, 0.5, 0.5], [0.5, 0.0, 0.5], [0.1, 0.0, 0.0]]
    model.run_qpoints(q)
    dft.run_qpoints(q)
    f_model, f_dft = model.qpoints.frequencies, dft.qpoints.frequencies
    assert f_model.max() == pytest.approx(f_dft.max(), rel=0.15)
