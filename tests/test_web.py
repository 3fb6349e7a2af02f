"""`mlff-ins serve`: every endpoint of the JSON API through FastAPI's TestClient, the bad inputs
answered in one sentence, the size limits, the job queue, and what the page loads.

The predictor is the session's ``small_predictor`` (7 fcc metals and L1_2 alloys, EMT taught);
the force field of the phonon job is ASE's EMT through its calculator YAML. Tolerances: a
spectrum that passes through the API as JSON keeps float64 (``rtol=1e-12``); a measurement made
as 3 × the prediction on the prediction's own energies must give the fit scale 3 to 1e-9 (the
text file keeps 17 digits) and χ²/N, MSE and the Wasserstein distance ~0.
"""

import io
import re
import socket
import threading
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from ase.build import bulk
from ase.io import write
from conftest import EMT_YAML
from fastapi.testclient import TestClient

from mlff_ins.cli import main
from mlff_ins.neutron.spectrum import read_spectra
from mlff_ins.neutron.units import MEV_PER_INVCM
from mlff_ins.web.app import STATIC_DIR, Settings, create_app

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with:DeprecationWarning")
RTOL = 1e-12
JOB_TIMEOUT_S = 180


# ------------------------------------------------------------------------------- fixtures

def _cu3au():
    atoms = bulk("Cu", "fcc", 3.7, cubic=True)
    atoms[0].symbol = "Au"
    return atoms


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Structure files written with ASE: Cu3Au as CIF, POSCAR and extxyz, fcc Cu, rock salt."""
    d = tmp_path_factory.mktemp("web_files")
    write(d / "Cu3Au.cif", _cu3au())
    write(d / "POSCAR", _cu3au(), format="vasp")
    write(d / "Cu3Au.extxyz", _cu3au())
    write(d / "Cu.cif", bulk("Cu", "fcc", 3.61))
    write(d / "NaCl.cif", bulk("NaCl", "rocksalt", 5.64))
    return d


@pytest.fixture(scope="module")
def client(small_predictor):
    """One app with the small predictor and EMT for the phonon route."""
    _, predictor_dir, _ = small_predictor
    app = create_app(Settings(predictor=str(predictor_dir), model=str(EMT_YAML)))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


def _upload(client, path, route="/api/structure", name=None, **fields):
    with open(path, "rb") as fh:
        return client.post(route, files={"file": (name or Path(path).name, fh)}, data=fields)


def _one_sentence(response, status):
    """The answer is ``{"error": one line}`` with ``status``, naming no server path."""
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"]
    text = body["error"]
    assert "\n" not in text and "Traceback" not in text and "mlff-ins-serve-" not in text
    return text


def _structure_id(client, files, name="Cu3Au.cif"):
    r = _upload(client, files / name)
    assert r.status_code == 200, r.text
    return r.json()["id"]


def _wait(client, job_id):
    t0 = time.time()
    while time.time() - t0 < JOB_TIMEOUT_S:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} not finished in {JOB_TIMEOUT_S} s: {job}")


# ------------------------------------------------------------------------------- the page

def test_page_loads_only_local_files(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("index.html", "app.js", "style.css"):
        text = (STATIC_DIR / name).read_text()
        assert not re.search(r"https?://", text), name
    assert '<script src="/vendor/plotly.min.js"' in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200
    import plotly

    js = client.get("/vendor/plotly.min.js")
    shipped = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    assert js.status_code == 200 and js.content == shipped.read_bytes()
    assert client.get("/docs").status_code == 200          # FastAPI's own API page stays
    assert "/api/predict" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize("select", ["unit", "measured-unit"])
def test_unit_selects_offer_every_energy_unit(select):
    """The page's unit menus offer every unit the API and the command line accept."""
    from mlff_ins.neutron.units import ENERGY_UNITS

    page = (STATIC_DIR / "index.html").read_text()
    body = re.search(rf'<select id="{select}"[^>]*>(.*?)</select>', page, re.S).group(1)
    offered = {v for v in re.findall(r'<option value="([^"]*)"', body) if v}
    assert offered == set(ENERGY_UNITS)


def test_status(client, small_predictor):
    st = client.get("/api/status").json()
    assert st["predictor"]["available"] and st["predictor"]["message"] == ""
    assert st["predictor"]["elements"] == small_predictor[2]["elements"]
    assert st["predictor"]["instruments"] == ["vision", "tosca"]
    assert st["model"] == {"available": True, "name": str(EMT_YAML)}
    assert st["limits"] == {"max_atoms": 5000, "max_upload_mb": 20.0, "max_queued": 4}


# ------------------------------------------------------------------------------ structures

@pytest.mark.parametrize("name", ["Cu3Au.cif", "POSCAR", "Cu3Au.extxyz"])
def test_structure_summary(client, files, name):
    r = _upload(client, files / name)
    assert r.status_code == 200, r.text
    s = r.json()
    assert s["formula"] == "AuCu3" and s["n_atoms"] == 4 and s["name"] == name
    assert s["spacegroup"] == "Pm-3m (221)"
    assert s["cell"]["a_A"] == pytest.approx(3.7, abs=1e-6)
    assert s["cell"]["gamma_deg"] == pytest.approx(90.0, abs=1e-6)
    assert s["cell"]["volume_A3"] == pytest.approx(3.7 ** 3, rel=1e-6)
    assert s["elements"] == ["Au", "Cu"] and s["warnings"] == []
    assert client.get(f"/api/structure/{s['id']}").json() == s


def test_uploads_keep_their_suffix_and_live_in_the_temporary_folder(client, files):
    sid = _structure_id(client, files, "Cu3Au.extxyz")
    workdir = client.app.state.server.workdir
    assert (workdir / "uploads" / sid / "Cu3Au.extxyz").is_file()


def test_unseen_element_is_a_warning_not_an_error(client, files):
    r = _upload(client, files / "NaCl.cif")
    assert r.status_code == 200
    assert any("Cl, Na" in w and "not in the predictor's training" in w
               for w in r.json()["warnings"])
    p = client.post("/api/predict", json={"id": r.json()["id"]})
    assert p.status_code == 200 and any("Cl, Na" in w for w in p.json()["warnings"])


def _partial_cif(path):
    path.write_text("data_x\n_cell_length_a 4.0\n_cell_length_b 4.0\n_cell_length_c 4.0\n"
                    "_cell_angle_alpha 90\n_cell_angle_beta 90\n_cell_angle_gamma 90\n"
                    "_symmetry_space_group_name_H-M 'P 1'\nloop_\n_atom_site_label\n"
                    "_atom_site_type_symbol\n_atom_site_fract_x\n_atom_site_fract_y\n"
                    "_atom_site_fract_z\n_atom_site_occupancy\n"
                    "Cu1 Cu 0 0 0 0.5\nAu1 Au 0 0 0 0.5\n")
    return path


@pytest.mark.parametrize("name, content, words", [
    ("junk.cif", "this is not a CIF\n", "junk.cif: cannot read"),
    ("notes.txt", "Cu 0 0 0\n", "notes.txt: not a structure file"),
    ("empty.cif", "", "empty"),
])
def test_bad_structures_are_one_sentence(client, tmp_path, name, content, words):
    path = tmp_path / name
    path.write_text(content)
    assert words in _one_sentence(_upload(client, path), 422)


def test_partial_occupancy_names_the_site(client, tmp_path):
    text = _one_sentence(_upload(client, _partial_cif(tmp_path / "alloy.cif")), 422)
    assert "occup" in text and ("Cu1" in text or "Au1" in text)


def test_upload_without_a_file_field(client):
    text = _one_sentence(client.post("/api/structure", data={"unit": "meV"},
                                     files={"other": ("x.cif", b"data")}), 400)
    assert "field named file" in text
    _one_sentence(client.post("/api/structure", json={"id": "x"}), 400)


@pytest.fixture(scope="module")
def limited(small_predictor):
    """An app that takes at most 3 atoms and 2 KiB uploads, and one job at a time."""
    _, predictor_dir, _ = small_predictor
    app = create_app(Settings(predictor=str(predictor_dir), model=str(EMT_YAML), max_atoms=3,
                              max_upload_mb=2 / 1024, max_queued=1))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


def test_structure_over_max_atoms(limited, files):
    text = _one_sentence(_upload(limited, files / "Cu3Au.cif"), 422)
    assert "4 atoms" in text and "--max-atoms" in text
    assert _upload(limited, files / "Cu.cif").status_code == 200


def test_file_over_max_upload_mb(limited, tmp_path):
    big = tmp_path / "big.xyz"
    big.write_text("1\n\nCu 0 0 0\n" + "# padding\n" * 400)       # > 2 KiB
    assert big.stat().st_size > 2048
    text = _one_sentence(_upload(limited, big), 413)
    assert "--max-upload-mb" in text
    uploads = limited.app.state.server.workdir / "uploads"
    assert not list(uploads.glob("*/big.xyz"))                   # the partial file is gone
    huge = tmp_path / "huge.cif"                                 # refused from its header
    huge.write_bytes(b"#" * 200_000)
    assert "--max-upload-mb" in _one_sentence(_upload(limited, huge), 413)
    assert not list(uploads.glob("*/huge.cif"))


def test_file_size_is_checked_while_streaming(limited):
    """No Content-Length (chunked upload): the size is counted chunk by chunk."""
    boundary = "XyZ123"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"big.xyz\"\r\n\r\n").encode()

    def body():
        yield head
        for _ in range(64):
            yield b"x" * 512                                     # 32 KiB in all
        yield f"\r\n--{boundary}--\r\n".encode()

    r = limited.post("/api/structure", content=body(),
                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert "--max-upload-mb" in _one_sentence(r, 413)


# ------------------------------------------------------------------------------ prediction

def test_predict_spectra_band_partials_and_units(client, files):
    sid = _structure_id(client, files)
    mev = client.post("/api/predict", json={"id": sid, "instrument": "vision",
                                            "temperature_K": 10, "unit": "meV"}).json()
    cm = client.post("/api/predict", json={"id": sid, "instrument": "vision",
                                           "temperature_K": 10, "unit": "cm-1"}).json()
    assert set(mev["spectra"]) == {"s_e", "s_e_Au", "s_e_Cu"}
    s_e = mev["spectra"]["s_e"]
    assert len(s_e["x"]) == len(s_e["y"]) == len(s_e["std"]) == 120
    assert max(s_e["y"]) == pytest.approx(1.0, rel=1e-12)          # max-normalised
    assert all(v >= 0 for v in s_e["std"])                         # two members: a spread
    # the partials are on the total's scale and sum to it (the predictor's contract)
    total = np.sum([mev["spectra"][k]["y"] for k in ("s_e_Au", "s_e_Cu")], axis=0)
    assert np.allclose(total, s_e["y"], rtol=1e-5, atol=1e-7)
    assert np.allclose(np.array(cm["spectra"]["s_e"]["x"]) * MEV_PER_INVCM, s_e["x"],
                       rtol=RTOL)
    assert cm["energy_label"] == "energy transfer (cm⁻¹)"
    assert mev["energy_label"] == "energy transfer (meV)"
    assert mev["instrument"] == "vision" and mev["temperature_K"] == 10
    assert mev["map"] is not None and len(mev["map"]["z"]) == len(mev["map"]["e"])
    tosca = client.post("/api/predict", json={"id": sid, "instrument": "tosca"}).json()
    assert tosca["instrument"] == "tosca" and tosca["result_id"] != mev["result_id"]


@pytest.mark.parametrize("body, status, words", [
    ({"id": "nope"}, 404, "upload it again"),
    ({"instrument": "mira"}, 400, "choose vision, tosca, direct or a chopper"),
    ({"unit": "K"}, 400, "choose meV, ueV, cm-1, THz"),
    ({"temperature_K": -5}, 400, "above 0"),
    ({"temperature_K": "warm"}, 422, "temperature_K"),
])
def test_bad_predict_requests(client, files, body, status, words):
    sid = _structure_id(client, files)
    assert words in _one_sentence(client.post("/api/predict", json={"id": sid, **body}), status)


# ---------------------------------------------------------------------- direct geometry

def _reachable(q, e, ei_meV, angles_deg):
    """(len(E), len(Q)) True where |Q|, E can be measured, from Q² = (2m/ħ²)(2 Ei − E −
    2 √(Ei (Ei − E)) cos 2θ) with 2m/ħ² = 1/E_PER_K2 (the package's constant, CODATA); a
    point within 1e-9 of a boundary is None (either answer is right)."""
    from mlff_ins.neutron.kinematics import E_PER_K2

    e = np.asarray(e, dtype=float)[:, None]
    q2 = np.asarray(q, dtype=float)[None, :] ** 2
    ef = np.clip(ei_meV - e, 0.0, None)
    lo, hi = ((2 * ei_meV - e - 2 * np.sqrt(ei_meV * ef) * np.cos(np.radians(a))) / E_PER_K2
              for a in angles_deg)
    inside = (e < ei_meV) & (q2 >= lo) & (q2 <= hi)
    edge = (np.abs(q2 - lo) < 1e-9) | (np.abs(q2 - hi) < 1e-9) | (np.abs(e - ei_meV) < 1e-9)
    out = inside.astype(object)
    out[edge] = None
    return out


def _z(answer_map):
    return np.array(answer_map["z"], dtype=float)        # JSON null -> NaN


DIRECT = {"instrument": "direct", "ei_meV": 25.0, "angles_deg": [10.0, 60.0]}


def test_direct_geometry_masks_broadens_and_integrates_the_map(client, files):
    """The predicted map (|Q| 0-3 1/Å, E 0-30 meV) at Ei 25 meV, 2θ 10-60°: null exactly
    outside the reachable region, inside the unmasked prediction (max-normalised again) without
    resolution, and that broadened by a Gaussian of FWHM 0.1 Ei with it (1e-9); S(E) is the
    |Q| sum of the masked map (1e-12)."""
    sid = _structure_id(client, files)
    plain = client.post("/api/predict", json={"id": sid}).json()["map"]
    q, e, z0 = np.array(plain["q"]), np.array(plain["e"]), _z(plain)
    reach = _reachable(q, e, 25.0, (10.0, 60.0))
    sure_in, sure_out = reach == True, reach == False  # noqa: E712 - None: on an edge
    assert sure_in.sum() >= 10 and sure_out.sum() >= 10     # the cut goes through the grid

    bare = client.post("/api/predict", json={"id": sid, **DIRECT}).json()
    assert bare["instrument"] == "direct" and bare["geometry"]["ei_meV"] == 25.0
    assert bare["geometry"]["angles_deg"] == [10.0, 60.0]
    z = _z(bare["map"])
    assert np.isnan(z[sure_out]).all() and np.isfinite(z[sure_in]).all()
    assert (z[sure_in & (z0 > 0)] > 0).all()          # nonzero where the prediction is
    inside = z0 * np.where(np.isfinite(z), 1.0, np.nan)
    np.testing.assert_allclose(z, inside / np.nanmax(inside), rtol=1e-9, equal_nan=True)
    s_e = bare["spectra"]["s_e"]
    assert set(bare["spectra"]) == {"s_e"} and s_e["units"] == "max-normalised"
    total = np.nansum(z, axis=1)
    total[~np.isfinite(z).any(axis=1)] = np.nan              # E >= Ei: nothing reachable
    np.testing.assert_allclose(np.array(s_e["y"], dtype=float), total / np.nanmax(total),
                               rtol=1e-12, equal_nan=True)

    fwhm = 0.1 * 25.0
    wide = client.post("/api/predict", json={"id": sid, **DIRECT,
                                             "resolution_fraction": 0.1}).json()
    assert wide["result_id"] != bare["result_id"]
    sigma = fwhm / (2 * np.sqrt(2 * np.log(2)))
    kernel = np.exp(-0.5 * ((e[:, None] - e[None, :]) / sigma) ** 2) / (np.sqrt(2 * np.pi)
                                                                       * sigma)
    broadened = (kernel * (e[1] - e[0])) @ z0                 # column E_src -> row E
    zw = _z(wide["map"])
    assert np.isnan(zw[sure_out]).all()
    expected = np.where(np.isfinite(zw), broadened, np.nan)
    np.testing.assert_allclose(zw, expected / np.nanmax(expected), rtol=1e-9, atol=1e-12,
                               equal_nan=True)

    # the downloads are the direct-geometry spectra, and say so
    h5 = client.get(wide["downloads"]["h5"])
    assert "direct_Ei25meV" in h5.headers["content-disposition"]
    path = Path(client.app.state.server.workdir) / "direct.h5"
    path.write_bytes(h5.content)
    spectra = read_spectra(path)
    assert set(spectra) == {"s_e", "sqe"} and spectra["sqe"].instrument == "direct"
    prov = spectra["sqe"].provenance
    assert prov["ei_meV"] == 25.0 and prov["angles_deg"] == [10.0, 60.0]
    assert prov["resolution_model"] == "Gaussian, FWHM 0.1 x Ei = 2.5 meV"
    np.testing.assert_allclose(spectra["sqe"].intensity.T, zw, rtol=RTOL, equal_nan=True)
    csv = client.get(wide["downloads"]["csv"])
    assert "direct_Ei25meV" in csv.headers["content-disposition"]
    assert "# instrument: direct" in zipfile.ZipFile(io.BytesIO(csv.content)).read(
        "sqe.csv").decode()
    assert client.get(wide["downloads"]["png"]).content[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("body, words", [
    ({"ei_meV": 0}, "ei_meV 0"),
    ({"ei_meV": -3}, "ei_meV -3"),
    ({"ei_meV": None}, "ei_meV"),
    ({"angles_deg": [60, 10]}, "angles_deg 60, 10"),
    ({"angles_deg": [20, 20]}, "angles_deg 20, 20"),
    ({"angles_deg": [-5, 60]}, "angles_deg -5, 60"),
    ({"angles_deg": [10, 181]}, "angles_deg 10, 181"),
    ({"angles_deg": [10]}, "angles_deg"),
    ({"resolution_fraction": -0.1}, "resolution_fraction -0.1"),
    ({"instrument": "vision"}, "ei_meV"),
])
def test_bad_direct_geometry_is_one_sentence_naming_the_field(client, files, body, words):
    sid = _structure_id(client, files)
    text = _one_sentence(client.post("/api/predict", json={"id": sid, **DIRECT, **body}), 400)
    assert text.startswith(words), text


def test_phonon_job_in_direct_geometry(client, files):
    """EMT fcc Cu at Ei 40 meV, 2θ 5-90°, FWHM 0.04 Ei: the job's map is null exactly outside
    the reachable region and positive inside (E > 0), S(E) its |Q| integral (1e-12)."""
    geometry = {"instrument": "direct", "ei_meV": 40.0, "angles_deg": [5.0, 90.0],
                "resolution_fraction": 0.04}
    sid = _structure_id(client, files, "Cu.cif")
    job = _wait(client, client.post("/api/jobs", json={"id": sid, **geometry}).json()["job_id"])
    assert job["state"] == "done", job["message"]
    result = job["result"]
    assert result["geometry"]["label"] == "direct geometry, Ei 40 meV, 2θ 5–90°, FWHM 0.04 Ei"
    q, e, z = np.array(result["map"]["q"]), np.array(result["map"]["e"]), _z(result["map"])
    reach = _reachable(q, e, 40.0, (5.0, 90.0))
    assert np.isnan(z[reach == False]).all()  # noqa: E712
    assert (z[(reach == True) & (e[:, None] > 0)] > 0).all()  # noqa: E712
    dq = q[1] - q[0]
    expected = np.where(np.isfinite(z).any(axis=1), np.nansum(z, axis=1) * dq, np.nan)
    s_e = result["spectra"]["s_e"]
    np.testing.assert_allclose(np.array(s_e["y"], dtype=float), expected, rtol=1e-12,
                               equal_nan=True)
    assert s_e["units"] == "barn/sr/meV × 1/Å"


def test_downloads_h5_csv_png(client, files):
    sid = _structure_id(client, files)
    pred = client.post("/api/predict", json={"id": sid, "unit": "cm-1"}).json()
    h5 = client.get(pred["downloads"]["h5"])
    assert h5.status_code == 200 and h5.content[:8] == b"\x89HDF\r\n\x1a\n"
    path = Path(client.app.state.server.workdir) / "check.h5"
    path.write_bytes(h5.content)
    spectra = read_spectra(path)
    assert {"s_e", "s_e_Au", "s_e_Cu"} <= set(spectra)
    assert np.allclose(spectra["s_e"].intensity, np.array(
        client.post("/api/predict", json={"id": sid}).json()["spectra"]["s_e"]["y"]), rtol=RTOL)
    csv = client.get(pred["downloads"]["csv"])
    names = zipfile.ZipFile(io.BytesIO(csv.content)).namelist()
    assert "s_e.csv" in names and "s_e_Au.csv" in names
    one = client.get(f"/api/download/prediction/{pred['result_id']}?format=csv&unit=cm-1"
                     "&name=s_e")
    assert one.headers["content-type"].startswith("text/csv")
    assert "energy (cm-1)" in one.text
    png = client.get(pred["downloads"]["png"])
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    _one_sentence(client.get(f"/api/download/prediction/{pred['result_id']}?format=pdf"), 400)
    _one_sentence(client.get("/api/download/prediction/unknown?format=h5"), 404)
    _one_sentence(client.get("/api/download/nothing/unknown?format=h5"), 404)


def test_no_predictor_says_so_and_structures_still_work(monkeypatch, files):
    from mlff_ins.errors import InputError
    from mlff_ins.predict import predictor

    def none():
        raise InputError("no predictor is shipped")

    monkeypatch.setattr(predictor, "shipped_predictor", none)
    with TestClient(create_app(Settings()), base_url="http://127.0.0.1") as c:
        st = c.get("/api/status").json()
        assert not st["predictor"]["available"] and not st["model"]["available"]
        message = st["predictor"]["message"]
        assert message.count(".") == 1 and "--predictor" in message
        r = _upload(c, files / "Cu3Au.cif")
        assert r.status_code == 200 and r.json()["formula"] == "AuCu3"
        assert _one_sentence(c.post("/api/predict", json={"id": r.json()["id"]}),
                             409) == message
        assert "--model" in _one_sentence(c.post("/api/jobs", json={"id": r.json()["id"]}),
                                          409)


# ----------------------------------------------------------------------------- measurement

def _mantid_ascii(path, x_meV, y, e, unit_comment=True):
    rows = "\n".join(f"{float(a)!r},{float(b)!r},{float(c)!r}" for a, b, c in zip(x_meV, y, e))
    path.write_text(("# X unit: meV\n" if unit_comment else "") + "# X , Y , E\n1\n" + rows
                    + "\n")
    return path


def test_measured_overlay_and_metrics(client, files, tmp_path):
    """A 'measurement' that is 3 × the prediction on its own energies: fit scale 3, χ²/N, MSE
    and W1 zero, every peak matched with no shift."""
    sid = _structure_id(client, files)
    s_e = client.post("/api/predict", json={"id": sid}).json()["spectra"]["s_e"]
    x, y = np.array(s_e["x"]), 3 * np.array(s_e["y"])
    path = _mantid_ascii(tmp_path / "vision_cu3au.txt", x, y, np.full_like(y, 0.01))
    m = _upload(client, path, "/api/measured")
    assert m.status_code == 200, m.text
    info = m.json()
    assert info["format"] == "mantid_ascii_v2"
    assert info["spectra"][0]["dims"] == 1 and info["spectra"][0]["has_errors"]
    c = client.post("/api/compare", json={"measured_id": info["id"], "id": sid,
                                          "instrument": "vision", "unit": "cm-1"})
    assert c.status_code == 200, c.text
    doc = c.json()
    (pair,) = doc["pairs"]
    assert pair["a"] == "predicted" and pair["b"] == "measured"
    assert pair["fit"]["scale"] == pytest.approx(3.0, rel=1e-9)
    assert pair["fit"]["chi2_per_dof"] == pytest.approx(0.0, abs=1e-12)
    assert pair["mse"] == pytest.approx(0.0, abs=1e-20)
    assert pair["cosine"] == pytest.approx(1.0, rel=1e-12)
    assert pair["wasserstein_meV"] == pytest.approx(0.0, abs=1e-9)
    peaks = pair["peaks"]                       # the same peaks (if any) in both, no shift
    assert peaks["unmatched_a"] == peaks["unmatched_b"] == []
    assert np.allclose(peaks["shifts_meV"], 0, atol=1e-9)
    roles = [o["role"] for o in doc["overlay"]]
    assert roles[:2] == ["measured", "calculated"] and roles.count("partial") == 2
    calc = doc["overlay"][1]
    assert "× 3 (fit)" in calc["label"]
    assert np.allclose(calc["y"], y, rtol=1e-9)                 # scaled onto the measurement
    assert np.allclose(np.array(calc["x"]) * MEV_PER_INVCM, x, rtol=RTOL)
    assert doc["energy_label"] == "energy transfer (cm⁻¹)"
    data = client.get(f"/api/measured/{info['id']}?unit=meV").json()
    assert np.allclose(data["data"]["s_e"]["y"], y, rtol=RTOL)


def test_requests_from_other_sites_are_refused(client):
    """A page of another site may not use the local server: a request whose Origin is not the
    page's own, or whose Host is not a local name (DNS rebinding: evil.example pointed at
    127.0.0.1), is refused with 403; the page's own requests pass."""
    assert client.get("/api/status").status_code == 200
    assert client.get("/api/status", headers={"Origin": "http://127.0.0.1"}).status_code == 200
    text = _one_sentence(client.get("/api/status", headers={"Host": "evil.example"}), 403)
    assert "localhost only" in text and "evil.example" in text
    text = _one_sentence(client.post("/api/predict", json={"id": "x"},
                                     headers={"Origin": "http://evil.example"}), 403)
    assert "another site" in text


def test_an_upload_is_read_as_its_name_says(client, tmp_path):
    """A file named .cif that holds an ASE trajectory is not read as the trajectory (the
    page's formats are those of the names it accepts)."""
    from ase.io import Trajectory as AseTrajectory

    fake = tmp_path / "fake.cif"
    with AseTrajectory(str(fake), "w") as t:
        t.write(bulk("Si", "diamond", 5.43))
    assert "fake.cif" in _one_sentence(_upload(client, fake), 422)


def test_measured_unit_field(client, tmp_path):
    x = np.linspace(10.0, 800.0, 50)                            # cm-1, no unit in the file
    path = _mantid_ascii(tmp_path / "bare.txt", x, np.ones(50), np.full(50, 0.1),
                         unit_comment=False)
    text = _one_sentence(_upload(client, path, "/api/measured"), 422)
    assert "bare.txt" in text and "unit" in text
    r = _upload(client, path, "/api/measured", unit="cm-1")
    assert r.status_code == 200
    assert r.json()["spectra"][0]["energy_meV"] == pytest.approx([x[0] * MEV_PER_INVCM,
                                                                 x[-1] * MEV_PER_INVCM])
    assert "choose meV" in _one_sentence(_upload(client, path, "/api/measured", unit="K"), 400)
    # a backscattering file in µeV: the field's "ueV" reads it as a thousandth of an meV
    r = _upload(client, path, "/api/measured", unit="ueV")
    assert r.status_code == 200
    assert r.json()["spectra"][0]["energy_meV"] == pytest.approx([x[0] * 1e-3, x[-1] * 1e-3])
    junk = tmp_path / "junk.dat"
    junk.write_text("nothing\nto see\nhere\n")
    assert "junk.dat" in _one_sentence(_upload(client, junk, "/api/measured"), 422)


def _sofqw(path, q_edges, e_edges, values, errors):
    """A Mantid processed-NeXus SofQW file (the layout of tests/test_readers.py)."""
    with h5py.File(path, "w") as f:
        entry = f.create_group("mantid_workspace_1")
        entry.attrs["NX_class"] = "NXentry"
        entry.create_dataset("definition", data="Mantid Processed Workspace")
        ws = entry.create_group("workspace")
        ws.attrs["NX_class"] = "NXdata"
        v = ws.create_dataset("values", data=values)
        v.attrs["signal"], v.attrs["axes"], v.attrs["units"] = 1, "axis2,axis1", "Counts"
        ws.create_dataset("errors", data=errors)
        ws.create_dataset("axis1", data=e_edges).attrs["units"] = "DeltaE"
        ws.create_dataset("axis2", data=q_edges).attrs["units"] = "MomentumTransfer"
    return path


def test_measured_map_and_residual(client, files, tmp_path):
    rng = np.random.default_rng(3)
    path = _sofqw(tmp_path / "sqw.nxs", np.linspace(0.5, 3.0, 11), np.linspace(0.0, 30.0, 21),
                  rng.uniform(0.5, 1.0, (10, 20)), np.full((10, 20), 0.05))
    m = _upload(client, path, "/api/measured").json()
    assert m["spectra"][0]["dims"] == 2 and m["format"] == "mantid_nexus_processed"
    # a unit chosen for a file that states its own: the page's words, not the command line's
    text = _one_sentence(_upload(client, path, "/api/measured", unit="cm-1"), 422)
    assert "the unit field" in text and "--measured" not in text and "Python" not in text
    data = client.get(f"/api/measured/{m['id']}").json()["data"]["sqe"]
    assert len(data["z"]) == len(data["e"]) == 20 and len(data["z"][0]) == len(data["q"]) == 10
    # nothing 2D to compare with: one sentence, not an error page
    assert "compute the phonons" in _one_sentence(
        client.post("/api/compare", json={"measured_id": m["id"]}), 409)
    sid = _structure_id(client, files)
    doc = client.post("/api/compare", json={"measured_id": m["id"], "id": sid}).json()
    assert doc["kind"] == "sqe" and set(doc["maps"]) == {"predicted", "measured", "residual"}
    (pair,) = doc["pairs"]
    assert pair["wasserstein_meV"] is None and pair["fit"]["scale"] > 0
    maps = doc["maps"]
    res, meas, calc = (np.asarray(maps[k]["z"], dtype=float)
                       for k in ("residual", "measured", "predicted"))
    assert res.shape == meas.shape == calc.shape == (len(maps["measured"]["e"]),
                                                     len(maps["measured"]["q"]))
    # residual = measured - s x calculation, s fitted at high |Q|
    scale = maps["residual"]["info"]["scale"]
    ok = np.isfinite(res)
    assert ok.any() and np.allclose(res[ok], meas[ok] - scale * calc[ok], rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------------ jobs

@pytest.fixture(scope="module")
def cu_job(client, files):
    """The phonon job of fcc Cu with EMT, run once: (job id, final job answer)."""
    sid = _structure_id(client, files, "Cu.cif")
    r = client.post("/api/jobs", json={"id": sid, "instrument": "vision", "temperature_K": 10})
    assert r.status_code == 202 and r.json()["state"] == "queued"
    job_id = r.json()["job_id"]
    return job_id, _wait(client, job_id)


def test_phonon_job_runs_and_gives_s_e_and_sqe(client, cu_job):
    job_id, job = cu_job
    assert job["state"] == "done", job["message"]
    assert job["progress"] == 1.0 and job["info"]["formula"] == "Cu"
    result = job["result"]
    assert "s_e" in result["spectra"] and result["map"] is not None
    assert result["supercell"] == [5, 5, 5]              # fcc primitive, widths >= 9 Å
    # EMT's fcc Cu phonons end near 30 meV: the strongest S(E) fundamental lies below 40 meV
    s_e = result["spectra"]["s_e"]
    assert 10 < s_e["x"][int(np.argmax(s_e["y"]))] < 40
    h5 = client.get(result["downloads"]["h5"])
    path = Path(client.app.state.server.workdir) / "job.h5"
    path.write_bytes(h5.content)
    spectra = read_spectra(path)
    assert {"s_e", "sqe"} <= set(spectra) and spectra["sqe"].intensity.ndim == 2
    assert np.allclose(spectra["s_e"].intensity, s_e["y"], rtol=RTOL)
    # asked again (a page reload): the same result, in another unit if asked
    again = client.get(f"/api/jobs/{job_id}?unit=cm-1").json()["result"]
    assert again["formula"] == "Cu" and again["energy_label"] == "energy transfer (cm⁻¹)"
    assert np.allclose(np.array(again["spectra"]["s_e"]["x"]) * MEV_PER_INVCM, s_e["x"],
                       rtol=RTOL)


def test_phonons_against_a_measurement(client, cu_job, tmp_path):
    """3 × the job's S(E) as a measurement: the phonon S(E) fits with scale 3 and every one of
    its peaks is matched with no shift."""
    job_id, job = cu_job
    s_e = job["result"]["spectra"]["s_e"]
    x, y = np.array(s_e["x"]), 3 * np.array(s_e["y"])
    keep = (x > 2) & (x < 60)
    path = _mantid_ascii(tmp_path / "cu.txt", x[keep], y[keep], 0.01 * y[keep] + 1e-6)
    mid = _upload(client, path, "/api/measured").json()["id"]
    doc = client.post("/api/compare", json={"measured_id": mid, "job_id": job_id}).json()
    (pair,) = doc["pairs"]
    assert pair["a"] == "phonons" and pair["fit"]["scale"] == pytest.approx(3.0, rel=1e-9)
    assert len(pair["peaks"]["matched"]) >= 2
    assert np.allclose(pair["peaks"]["shifts_meV"], 0, atol=1e-9)
    assert "phonons × 3 (fit)" in doc["overlay"][1]["label"]
    # the job's spectrum is of VISION at 10 K: not compared as TOSCA's, nor at 300 K
    for other in ({"instrument": "tosca"}, {"temperature_K": 300}):
        text = _one_sentence(client.post("/api/compare", json={"measured_id": mid,
                                                               "job_id": job_id, **other}), 409)
        assert f"the phonons (job {job_id}) were computed for VISION at 10 K" in text


def test_failed_job_says_why(client, files):
    sid = _structure_id(client, files, "NaCl.cif")              # EMT has no Na or Cl
    job = _wait(client, client.post("/api/jobs", json={"id": sid}).json()["job_id"])
    assert job["state"] == "failed" and job["result"] is None
    assert "\n" not in job["message"] and "Traceback" not in job["message"]


def test_bad_job_requests(client, files):
    _one_sentence(client.get("/api/jobs/unknown"), 404)
    sid = _structure_id(client, files)
    assert "choose vision, tosca, direct" in _one_sentence(
        client.post("/api/jobs", json={"id": sid, "instrument": "nope"}), 400)
    assert "ei_meV" in _one_sentence(
        client.post("/api/jobs", json={"id": sid, "instrument": "maps"}), 400)
    _one_sentence(client.post("/api/jobs", json={"id": "unknown"}), 404)


def test_queue_refuses_beyond_max_queued(limited, files):
    """max_queued=1: while one job is unfinished, the next is refused with 429."""
    server = limited.app.state.server
    release = threading.Event()
    blocker = server.jobs.submit(lambda report: release.wait(30))
    try:
        sid = _structure_id(limited, files, "Cu.cif")
        text = _one_sentence(limited.post("/api/jobs", json={"id": sid}), 429)
        assert "queue is full" in text and "limit is 1" in text
    finally:
        release.set()
    _until(lambda: server.jobs.get(blocker.id).state == "done")
    r = limited.post("/api/jobs", json={"id": sid})
    assert r.status_code == 202
    assert _wait(limited, r.json()["job_id"])["state"] == "done"


def _until(condition, timeout_s=10.0):
    t0 = time.time()
    while not condition() and time.time() - t0 < timeout_s:
        time.sleep(0.01)
    assert condition()


def test_job_queue_runs_in_order_and_refuses_beyond_its_limit():
    from mlff_ins.web.jobs import JobQueue, QueueFull

    q = JobQueue(max_jobs=2)
    gate = threading.Event()

    def first(report):
        report(0.5, "half way")
        gate.wait(10)
        return "one"

    q.start()
    a, b = q.submit(first), q.submit(lambda report: "two")
    with pytest.raises(QueueFull, match="limit is 2"):
        q.submit(lambda report: "three")
    _until(lambda: a.message == "half way")
    assert a.state == "running" and a.progress == 0.5
    assert b.state == "queued" and q.position(b) == 1 and q.position(a) == 0
    gate.set()
    _until(lambda: b.state == "done")
    assert (a.result, b.result) == ("one", "two") and a.finished <= b.started
    c = q.submit(lambda report: "three")
    _until(lambda: c.state == "done")
    q.stop()


def test_job_queue_reports_failures_in_one_line():
    from mlff_ins.errors import InputError
    from mlff_ins.web.jobs import JobQueue

    q = JobQueue(max_jobs=2)
    q.start()

    def bad(report):
        raise InputError("a.cif: no such thing")

    def crash(report):
        raise RuntimeError("boom\nsecond line")

    jobs = [q.submit(bad), q.submit(crash)]
    t0 = time.time()
    while any(j.state != "failed" for j in jobs) and time.time() - t0 < 5:
        time.sleep(0.01)
    assert jobs[0].message == "a.cif: no such thing"
    assert jobs[1].message == "the calculation failed (RuntimeError: boom)"
    q.stop()


# ------------------------------------------------------------------------------- lifespan

def test_temporary_folder_is_removed_at_shutdown(small_predictor, files):
    _, predictor_dir, _ = small_predictor
    app = create_app(Settings(predictor=str(predictor_dir)))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        workdir = app.state.server.workdir
        sid = _structure_id(c, files)
        assert (workdir / "uploads" / sid / "Cu3Au.cif").is_file()
    assert not workdir.exists()


def test_serve_refuses_a_busy_port(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--port {port}" in err


def test_serve_refuses_a_model_that_is_not_one(tmp_path):
    from mlff_ins.errors import InputError

    with pytest.raises(InputError, match="--model nonsense-model"):
        create_app(Settings(model="nonsense-model"))


def test_serve_command_starts_says_where_and_cleans_up(tmp_path):
    """`mlff-ins serve` as a user runs it: the URL and how to expose it on stdout, the limits
    given, and on Ctrl-C (SIGINT) a clean exit that removes its temporary folder."""
    import signal
    import subprocess
    import sys

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**__import__("os").environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "mlff_ins.cli", "serve", "--port", str(port),
                             "--max-atoms", "10", "--max-queued", "2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        status, t0 = None, time.time()
        while status is None and time.time() - t0 < 180 and proc.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/api/status", timeout=2).json()
            except httpx.HTTPError:
                time.sleep(0.5)
        assert status is not None, proc.stderr.read() if proc.poll() is not None else "no answer"
        assert status["limits"] == {"max_atoms": 10, "max_upload_mb": 20.0, "max_queued": 2}
        assert list(tmp_path.glob("mlff-ins-serve-*"))
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"http://localhost:{port}/" in out and "--host 0.0.0.0" in out
    assert "no authentication" in out
    assert not list(tmp_path.glob("mlff-ins-serve-*"))
