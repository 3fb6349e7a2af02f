"""The page of `mlff-ins serve` in a real headless Chromium (selenium + chromedriver).

uvicorn serves the app (the session's small predictor, EMT for phonons) on a free local port in
a thread. The browser uploads a CIF through the file input and must then show the formula and
a Plotly S(E) with data; switching the unit to cm⁻¹ must change the axis title and the energies
(by 8.065544 per meV, to 1e-9 relative); a measured file must bring the metrics table; a phonon
job must survive a reload of the page and end with its S(Q,E) map; direct geometry must bring
a map cut to the reachable (Q, E) region, and a bad Ei a message naming ``ei_meV``. A screenshot
is saved in tmp_path and copied to /tmp/mlff_ins_web_screenshot.png.

The page times each structure upload itself (performance.now() from the file input's change to
the S(E) drawn: the S(E) panel's data-upload-to-plot-ms); the test prints these figures for the
CIF and for a 216-atom cell (3x3x3 diamond Si) and asserts nothing on them.

Chromium and chromedriver come from the Debian packages (scripts/install.sh). Without them the
test is skipped, except under CI=true, where a missing browser is a failure.
"""

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import EMT_YAML

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT_COPY = Path("/tmp/mlff_ins_web_screenshot.png")
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,2700"]
WAIT_S = 120
MEV_PER_INVCM = 0.1239841984


def _missing(what: str):
    """Skip outside CI; in CI (CI=true) a missing browser or driver fails the test."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing; scripts/install.sh installs chromium and "
                    "chromium-driver")
    pytest.skip(f"{what} is missing (apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def webdriver_module():
    # Selenium Manager must not try to download a driver: the driver path is given explicitly
    os.environ["SE_OFFLINE"] = "true"
    try:
        from selenium import webdriver
    except ImportError:
        _missing("selenium")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            _missing(str(path))
    return webdriver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_url(small_predictor, webdriver_module):
    import uvicorn

    from mlff_ins.web.app import Settings, create_app

    _, predictor_dir, _ = small_predictor
    port = _free_port()
    app = create_app(Settings(port=port, predictor=str(predictor_dir), model=str(EMT_YAML)))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    t0 = time.time()
    while not server.started and time.time() - t0 < 60:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(15)
    assert not app.state.server.workdir.exists()      # the uploads went with the server


@pytest.fixture
def browser(webdriver_module, tmp_path):
    from selenium.webdriver.chrome.service import Service

    opts = webdriver_module.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in CHROME_FLAGS + [f"--user-data-dir={tmp_path / 'chrome-profile'}"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver_module.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, script: str, what: str, timeout_s: float = WAIT_S):
    """Run ``script`` (JavaScript returning a value) until it is truthy; return the value."""
    t0 = time.time()
    while time.time() - t0 < timeout_s:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.2)
    error = driver.execute_script("return document.getElementById('error').textContent")
    raise AssertionError(f"timed out waiting for {what} (page error: {error!r})")


PLOT_READY = ("const d = document.getElementById('plot-se');"
              "return d && d.data && d.data.length > 0 && d.layout ? d.layout.xaxis.title.text"
              " : null;")
#: the predicted total S(E) as plotted: (x, y) read back from the Plotly graph
PREDICTED_TOTAL = ("const d = document.getElementById('plot-se');"
                   "const t = d.data.find(t => t.name === 'predicted VISION');"
                   "return t ? [t.x, t.y] : null;")
FIRST_X = ("const d = document.getElementById('plot-se');"
           "const t = d.data.find(t => t.name && t.name.startsWith('predicted ') && "
           "t.mode === 'lines' && !t.fill); return t ? t.x[0] : null;")
#: the page's own upload-to-plot time (ms) of the last structure upload
UPLOAD_TO_PLOT_MS = "return document.getElementById('plot-se').dataset.uploadToPlotMs || null;"


def _upload_timed(browser, path: Path, label: str) -> float:
    """Upload ``path`` through the file input and wait for the S(E) drawn; print and return
    the page's upload-to-plot time (s)."""
    from selenium.webdriver.common.by import By

    browser.find_element(By.ID, "structure-file").send_keys(str(path))
    seconds = float(_wait(browser, UPLOAD_TO_PLOT_MS, f"the S(E) of {path.name}")) / 1000
    assert browser.execute_script("return document.getElementById('plot-se').data.some("
                                  "t => t.name && t.name.startsWith('predicted ') && "
                                  "t.y.some(v => v > 0))")
    print(f"\nbrowser upload-to-plot: {label} {seconds:.2f} s")
    return seconds


def _measured_file(path: Path) -> Path:
    """A measured-looking S(E): one Gaussian peak at 20 meV on a flat background, with errors,
    as a Mantid ASCII file that names its unit."""
    x = np.linspace(2.0, 140.0, 300)
    y = np.exp(-0.5 * ((x - 20.0) / 3.0) ** 2) + 0.1
    rows = "\n".join(f"{a!r},{b!r},{0.01!r}" for a, b in zip(x.tolist(), y.tolist()))
    path.write_text("# X unit: meV\n# X , Y , E\n1\n" + rows + "\n")
    return path


def test_page_in_headless_chromium(server_url, browser, tmp_path, small_predictor):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    from mlff_ins.cli import main
    from mlff_ins.neutron.spectrum import read_spectra

    cif = Path(__file__).resolve().parent / "data" / "structures" / "Cu3Au.cif"

    browser.get(server_url)
    _wait(browser, "return document.getElementById('server-status').textContent"
                   ".includes('Predictor for')", "the server status")
    _upload_timed(browser, cif, "4 atoms (Cu3Au.cif, the first upload)")
    assert _wait(browser, PLOT_READY, "the S(E) plot") == "energy transfer (meV)"
    assert browser.find_element(By.ID, "formula").text == "AuCu3"
    assert browser.find_element(By.ID, "spacegroup").text == "Pm-3m (221)"
    # the plotted values are those of `mlff-ins predict` on the same file and predictor
    x_plot, y_plot = browser.execute_script(PREDICTED_TOTAL)
    h5 = tmp_path / "cli.h5"
    assert main(["predict", str(cif), "--predictor", str(small_predictor[1]), "-o",
                 str(h5)]) == 0
    ref = read_spectra(h5)["s_e"]
    np.testing.assert_allclose(x_plot, ref.x, rtol=1e-9)      # JSON round trip of floats
    np.testing.assert_allclose(y_plot, ref.intensity, rtol=1e-6, atol=1e-9)
    x_mev = browser.execute_script(FIRST_X)
    n_traces = browser.execute_script("return document.getElementById('plot-se').data.length")
    assert n_traces >= 4                       # band (2 traces), total, partials Au and Cu

    from ase.build import bulk
    from ase.io import write

    si = tmp_path / "Si216.cif"
    write(si, bulk("Si", "diamond", 5.43, cubic=True).repeat((3, 3, 3)))
    _upload_timed(browser, si, "216 atoms (Si, 3x3x3 diamond)")
    assert browser.find_element(By.ID, "n-atoms").text == "216"
    _upload_timed(browser, cif, "4 atoms (Cu3Au.cif again)")      # the rest goes on with it
    assert browser.find_element(By.ID, "formula").text == "AuCu3"

    Select(browser.find_element(By.ID, "unit")).select_by_value("cm-1")
    _wait(browser, PLOT_READY.replace("d.layout.xaxis.title.text",
                                      "d.layout.xaxis.title.text.includes('cm⁻¹')"),
          "the axis in cm⁻¹")
    assert browser.execute_script(PLOT_READY) == "energy transfer (cm⁻¹)"
    assert browser.execute_script(FIRST_X) * MEV_PER_INVCM == pytest.approx(x_mev, rel=1e-9)

    measured = _measured_file(tmp_path / "measured.txt")
    browser.find_element(By.ID, "measured-file").send_keys(str(measured))
    _wait(browser, "return !document.getElementById('metrics').hidden && "
                   "document.querySelectorAll('#metrics tbody tr').length > 0", "the metrics")
    row = browser.find_element(By.CSS_SELECTOR, "#metrics tbody tr").text
    assert row.startswith("predicted vs measured")

    browser.find_element(By.ID, "compute-phonons").click()
    _wait(browser, "return location.hash.includes('job=')", "the job id in the URL")
    browser.refresh()                          # the job survives a reload of the page
    _wait(browser, "return document.getElementById('job-message').textContent"
                   ".startsWith('done')", "the phonon job", timeout_s=240)
    _wait(browser, "const d = document.getElementById('plot-map');"
                   "return !d.hidden && d.data && d.data.length > 0", "the S(Q,E) map")
    assert browser.find_element(By.ID, "formula").text == "AuCu3"
    _wait(browser, "return [...document.querySelectorAll('#metrics tbody tr')]"
                   ".some(r => r.textContent.startsWith('phonons vs measured'))",
          "the phonons in the metrics table")
    labels = browser.execute_script("return document.getElementById('plot-se').data"
                                    ".map(t => t.name)")
    assert any(str(n).startswith("phonons × ") for n in labels), labels

    # direct geometry (Ei 80 meV, 2θ 3-135°, FWHM 3 % of Ei: the page's defaults): the
    # predicted map, cut to the reachable region (|Q| = 0 never is), replaces the VISION job's
    Select(browser.find_element(By.ID, "instrument")).select_by_value("direct")
    title = _wait(browser, "const d = document.getElementById('plot-map');"
                           "return !d.hidden && d.data && d.data.length > 0 && d.layout.title"
                           " && d.layout.title.text.includes('direct') ? d.layout.title.text"
                           " : null;", "the direct-geometry map")
    assert "Ei 80 meV" in title
    z = browser.execute_script("return document.getElementById('plot-map').data[0].z")
    flat = [v for row in z for v in row]
    assert None in flat and any(v is not None for v in flat)
    assert all(row[0] is None for row in z)                   # |Q| = 0 is out of reach
    _wait(browser, "return document.getElementById('prediction-note').textContent"
                   ".includes('Predicted S(E) for direct geometry, Ei 80 meV')",
          "the direct-geometry S(E)")
    labels = browser.execute_script("return document.getElementById('plot-se').data"
                                    ".map(t => t.name)")
    assert any(str(n).startswith("predicted × ") for n in labels), labels   # overlay on data
    assert browser.find_element(By.ID, "error").text == ""

    shot = tmp_path / "page.png"
    assert browser.save_screenshot(str(shot))
    shutil.copyfile(shot, SCREENSHOT_COPY)
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)
    assert pixels.shape[0] > 500 and pixels[..., :3].std() > 0.05     # not a blank page
    problems = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not problems, problems              # no script errors, nothing blocked by the CSP

    # a bad incident energy: the server's one sentence, naming the field, on the page
    ei = browser.find_element(By.ID, "ei")
    ei.clear()
    ei.send_keys("-5", Keys.TAB)
    _wait(browser, "return document.getElementById('error').textContent.includes("
                   "'ei_meV -5: the incident energy Ei must be above 0 meV')", "the error")
    assert browser.find_element(By.ID, "error").is_displayed()
