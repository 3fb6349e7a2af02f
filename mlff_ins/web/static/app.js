// mlff-ins serve: the page's logic. Plain JavaScript; every number comes from the JSON API
// (/docs). What the page shows is rebuilt from `state` by the render* functions.
"use strict";

const state = {
  status: null,       // GET /api/status
  structure: null,    // POST /api/structure answer
  prediction: null,   // POST /api/predict answer
  measured: null,     // POST /api/measured answer
  measuredData: null, // GET /api/measured/{id} answer (shown when there is nothing to compare)
  comparison: null,   // POST /api/compare answer
  job: null,          // GET /api/jobs/{id} answer
  pollTimer: null,
  busy: 0,
  sePlotted: null,    // the promise of the last S(E) drawing (Plotly.react)
};

const $ = (id) => document.getElementById(id);
const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
  "#17becf", "#7f7f7f", "#bcbd22"];
const PLOT_CONFIG = {responsive: true, displaylogo: false, showLink: false,
  showSendToCloud: false, toImageButtonOptions: {format: "png"}};
const INDIRECT = ["vision", "tosca"];

// ------------------------------------------------------------------------------ talking

/** fetch + JSON; a 4xx/5xx answer becomes an Error with the server's one-sentence message. */
async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new Error("The server cannot be reached; is `mlff-ins serve` still running?");
  }
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    body = null;
  }
  if (!response.ok) {
    const message = body && body.error ? body.error : `the server answered ${response.status}`;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return body;
}

function postJSON(path, data) {
  return api(path, {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify(data)});
}

function postFile(path, file, fields = {}) {
  const form = new FormData();
  for (const [key, value] of Object.entries(fields)) {
    if (value) form.append(key, value);
  }
  form.append("file", file, file.name);
  return api(path, {method: "POST", body: form});
}

// ------------------------------------------------------------------------------ messages

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function showWarnings(list) {
  const box = $("warnings");
  box.replaceChildren();
  const items = [...new Set(list.filter(Boolean))];
  for (const text of items) {
    const p = document.createElement("p");
    p.textContent = "Warning: " + text;
    box.appendChild(p);
  }
  box.hidden = items.length === 0;
}

function currentWarnings() {
  const out = [];
  if (state.structure) out.push(...state.structure.warnings);
  if (state.prediction) out.push(...state.prediction.warnings);
  return out;
}

// ------------------------------------------------------------------------------ settings

function numberIn(id) {
  const v = parseFloat($(id).value);
  return Number.isFinite(v) ? v : null;
}

/**
 * The instrument fields of the API: the instrument, and for direct geometry Ei, the 2θ range
 * and the resolution (a FWHM fraction of Ei for `direct`, chopper settings for a chopper
 * spectrometer). Empty fields go as null; the server answers what is wrong with them.
 */
function geometry() {
  const instrument = $("instrument").value;
  if (INDIRECT.includes(instrument)) return {instrument};
  const out = {instrument, ei_meV: numberIn("ei"),
    angles_deg: [numberIn("angle-min"), numberIn("angle-max")]};
  if (instrument === "direct") {
    const percent = numberIn("resolution-percent");
    out.resolution_fraction = percent === null ? null : percent / 100;
  } else {
    out.chopper_frequency_hz = numberIn("chopper-frequency");
    out.chopper_package = $("chopper-package").value.trim() || null;
  }
  return out;
}

function settings() {
  const t = numberIn("temperature");
  return {
    geometry: geometry(),
    temperature_K: t,
    unit: $("unit").value,
    background: $("background").value,
  };
}

/** Show the direct-geometry fields that apply to the chosen instrument. */
function renderGeometryControls() {
  const instrument = $("instrument").value;
  const direct = !INDIRECT.includes(instrument);
  for (const el of document.querySelectorAll(".direct-only")) el.hidden = !direct;
  for (const el of document.querySelectorAll(".direct-fraction")) {
    el.hidden = instrument !== "direct";
  }
  for (const el of document.querySelectorAll(".chopper-only")) {
    el.hidden = !direct || instrument === "direct";
  }
}

/** "VISION", "direct Ei 80 meV", "MARI Ei 80 meV": a legend's name for a geometry. */
function shortLabel(g) {
  if (!g.direct) return g.instrument.toUpperCase();
  const name = g.instrument === "direct" ? "direct" : g.instrument.toUpperCase();
  return `${name} Ei ${g.ei_meV} meV`;
}

// the fragment's names of the direct-geometry inputs
const GEOMETRY_INPUTS = {ei: "ei", a1: "angle-min", a2: "angle-max",
  res: "resolution-percent", chf: "chopper-frequency", chp: "chopper-package"};

/** The ids that let a reload come back to the same structure, measurement and job. */
function writeFragment() {
  const p = new URLSearchParams();
  if (state.structure) p.set("structure", state.structure.id);
  if (state.measured) p.set("measured", state.measured.id);
  if (state.job) p.set("job", state.job.job_id);
  const s = settings();
  p.set("instrument", s.geometry.instrument);
  if (s.geometry.ei_meV !== undefined) {
    for (const [key, id] of Object.entries(GEOMETRY_INPUTS)) {
      if ($(id).value !== "") p.set(key, $(id).value);
    }
  }
  p.set("unit", s.unit);
  if (s.temperature_K !== null) p.set("T", String(s.temperature_K));
  history.replaceState(null, "", "#" + p.toString());
}

function readFragment() {
  return new URLSearchParams(location.hash.slice(1));
}

function tooLarge(file) {
  const limit = state.status ? state.status.limits.max_upload_mb : Infinity;
  if (file.size > limit * 1024 * 1024) {
    showError(`${file.name} is larger than this server's limit of ${limit} MiB ` +
      "(--max-upload-mb).");
    return true;
  }
  return false;
}

// ------------------------------------------------------------------------------ actions

/**
 * Upload a structure and show its spectra. The time from here (the file input's change) to
 * the S(E) drawn on the screen (Plotly done and the next frame) goes to the S(E) panel's
 * data-upload-to-plot-ms attribute (milliseconds, performance.now()).
 */
async function uploadStructure(file) {
  const t0 = performance.now();
  if (!file || tooLarge(file)) return;
  delete $("plot-se").dataset.uploadToPlotMs;
  showError("");
  setBusy(+1);
  try {
    state.structure = await postFile("/api/structure", file);
    state.prediction = null;
    state.comparison = null;
    state.job = null;        // a phonon job belongs to the structure it was started for
    renderStructure();
    renderJob();
    writeFragment();
    await refresh();
    if (state.sePlotted) {
      await state.sePlotted;
      await new Promise((done) => requestAnimationFrame(() => done()));
      $("plot-se").dataset.uploadToPlotMs = (performance.now() - t0).toFixed(1);
    }
  } catch (err) {
    showError(err.message);
  } finally {
    setBusy(-1);
  }
}

async function uploadMeasured(file) {
  if (!file || tooLarge(file)) return;
  showError("");
  setBusy(+1);
  try {
    state.measured = await postFile("/api/measured", file, {unit: $("measured-unit").value});
    state.comparison = null;
    renderMeasuredInfo();
    writeFragment();
    await refresh();
  } catch (err) {
    showError(err.message);
  } finally {
    setBusy(-1);
  }
}

/** Ask the server again for everything the settings change: prediction, comparison, job. */
async function refresh() {
  const s = settings();
  const errors = [];
  if (state.structure && state.status && state.status.predictor.available) {
    try {
      state.prediction = await postJSON("/api/predict", {id: state.structure.id,
        ...s.geometry, temperature_K: s.temperature_K, unit: s.unit});
    } catch (err) {
      state.prediction = null;
      errors.push(err.message);
    }
  }
  if (state.job) await pollJob(false);
  state.comparison = null;
  state.measuredData = null;
  if (state.measured) {
    const jobDone = state.job && state.job.state === "done";
    if (state.prediction || jobDone) {
      try {
        state.comparison = await postJSON("/api/compare", {
          measured_id: state.measured.id, id: state.prediction ? state.structure.id : null,
          job_id: jobDone ? state.job.job_id : null,
          measured_name: $("measured-name").value || null, ...s.geometry,
          temperature_K: s.temperature_K, unit: s.unit, background: s.background});
      } catch (err) {
        errors.push(err.message);
      }
    }
    if (!state.comparison) {
      try {
        state.measuredData = await api(`/api/measured/${state.measured.id}?unit=` +
          encodeURIComponent(s.unit));
      } catch (err) {
        errors.push(err.message);
      }
    }
  }
  showError([...new Set(errors)].join(" "));     // predict and compare may say the same
  writeFragment();
  render();
}

async function startJob() {
  if (!state.structure) {
    showError("Upload a structure first.");
    return;
  }
  const s = settings();
  try {
    const answer = await postJSON("/api/jobs", {id: state.structure.id,
      ...s.geometry, temperature_K: s.temperature_K});
    state.job = {job_id: answer.job_id, state: answer.state, progress: 0,
      message: "waiting for the worker", position: answer.position, result: null};
    showError("");
    writeFragment();
    renderJob();
    schedulePoll();
  } catch (err) {
    showError(err.message);
  }
}

/** GET the job; with `follow`, keep polling until it is finished, then refresh the plots. */
async function pollJob(follow = true) {
  if (!state.job) return;
  const before = state.job.state;
  try {
    state.job = await api(`/api/jobs/${state.job.job_id}?unit=` +
      encodeURIComponent(settings().unit));
  } catch (err) {
    showError(err.message);
    if (err.status === 404) state.job = null;
    writeFragment();
    renderJob();
    return;
  }
  renderJob();
  if (!follow) return;
  if (state.job.state === "queued" || state.job.state === "running") {
    schedulePoll();
  } else if (before !== state.job.state) {
    await refresh();
  }
}

function schedulePoll() {
  clearTimeout(state.pollTimer);
  state.pollTimer = setTimeout(() => pollJob(true), 1000);
}

function setBusy(delta) {
  state.busy += delta;
  document.body.classList.toggle("busy", state.busy > 0);
}

// ------------------------------------------------------------------------------ rendering

function render() {
  showWarnings(currentWarnings());
  renderPredictionNote();
  renderSE();
  renderMetrics();
  renderMaps();
  renderDownloads();
  renderJob();
}

function renderStatus() {
  const st = state.status;
  const parts = [`mlff-ins ${st.version}.`];
  parts.push(st.predictor.available
    ? `Predictor for ${st.predictor.instruments.map((i) => i.toUpperCase()).join(" and ")}, ` +
      "trained on " + `${st.predictor.elements.join(" ")}.`
    : st.predictor.message);
  $("server-status").textContent = parts.join(" ");
  $("model-note").textContent = st.model.available
    ? `Relax, then finite-displacement phonons with ${st.model.name} (supercell at least 9 Å ` +
      "wide, at most 256 atoms), then INS S(E) and the powder S(Q,E) map. Runs in the " +
      "background; the page can be reloaded meanwhile."
    : "No force field on this server: start it with --model NAME|DIR to compute phonons.";
  const choppers = $("chopper-options");
  choppers.replaceChildren();
  for (const name of st.direct.instruments.filter((n) => n !== "direct")) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name.toUpperCase();
    choppers.appendChild(option);
  }
  choppers.hidden = choppers.children.length === 0;
  $("angle-min").value = st.direct.angles_deg[0];
  $("angle-max").value = st.direct.angles_deg[1];
  const instruments = st.predictor.instruments;
  if (st.predictor.available) {
    for (const option of $("instrument").options) {
      // direct geometry comes from the predicted S(Q,E) map (or the phonons)
      const predicted = INDIRECT.includes(option.value) ? instruments.includes(option.value)
        : st.predictor.two_d;
      option.disabled = !predicted && !st.model.available;
    }
  }
}

function renderStructure() {
  const s = state.structure;
  $("structure-info").hidden = !s;
  if (!s) return;
  $("structure-name").textContent = s.name;
  $("formula").textContent = s.formula;
  $("n-atoms").textContent = String(s.n_atoms);
  $("spacegroup").textContent = s.spacegroup;
  const c = s.cell;
  const f = (v, d) => (v === null || v === undefined ? "—" : v.toFixed(d));
  $("cell").textContent = `a ${f(c.a_A, 4)} Å, b ${f(c.b_A, 4)} Å, c ${f(c.c_A, 4)} Å; ` +
    `α ${f(c.alpha_deg, 2)}°, β ${f(c.beta_deg, 2)}°, γ ${f(c.gamma_deg, 2)}°; ` +
    `V ${f(c.volume_A3, 3)} Å³`;
  $("compute-phonons").disabled = !(state.status && state.status.model.available);
}

function renderPredictionNote() {
  const note = $("prediction-note");
  if (state.status && !state.status.predictor.available) {
    note.textContent = state.status.predictor.message;
  } else if (state.prediction && state.prediction.geometry.direct) {
    note.textContent = `Predicted S(E) for ${state.prediction.geometry.label} at ` +
      `${state.prediction.temperature_K} K: the predicted S(Q,E) map below, broadened with ` +
      "the instrument's resolution and cut to the (Q, E) region it reaches, integrated over " +
      "Q (max-normalised); the band is ± the spread of the ensemble.";
  } else if (state.prediction) {
    note.textContent = `Predicted ${state.prediction.instrument.toUpperCase()} S(E) at ` +
      `${state.prediction.temperature_K} K (max-normalised); the band is ± the spread of ` +
      "the ensemble.";
  } else {
    note.textContent = state.structure ? "" : "Upload a structure to see its spectrum.";
  }
}

function renderMeasuredInfo() {
  const m = state.measured;
  const select = $("measured-name");
  select.replaceChildren();
  if (!m) {
    $("measured-info").textContent = "";
    return;
  }
  for (const sp of m.spectra) {
    const option = document.createElement("option");
    option.value = sp.name;
    option.textContent = `${sp.name} (${sp.dims}D)`;
    select.appendChild(option);
  }
  $("measured-name-label").hidden = m.spectra.length < 2;
  const first = m.spectra[0];
  $("measured-info").textContent = `${m.name}: ${m.format}, ${m.spectra.length} spectrum` +
    `${m.spectra.length === 1 ? "" : "s"}, ${first.energy_meV[0].toFixed(2)}–` +
    `${first.energy_meV[1].toFixed(2)} meV` + (first.has_errors ? "" : ", no error bars");
}

/** Line, with a ±std band drawn first (two traces, the second filling to the first). */
function lineTraces(curve, name, colour, {dash = "solid", width = 2, band = true} = {}) {
  const out = [];
  if (band && curve.std) {
    const hi = curve.y.map((v, i) => (v === null || curve.std[i] === null ? null : v + curve.std[i]));
    const lo = curve.y.map((v, i) => (v === null || curve.std[i] === null ? null : v - curve.std[i]));
    out.push({x: curve.x, y: hi, mode: "lines", line: {width: 0, color: colour},
      hoverinfo: "skip", showlegend: false, legendgroup: name});
    out.push({x: curve.x, y: lo, mode: "lines", line: {width: 0, color: colour},
      fill: "tonexty", fillcolor: colour + "40", name: `${name} ± std`, hoverinfo: "skip",
      legendgroup: name});
  }
  out.push({x: curve.x, y: curve.y, mode: "lines", name, legendgroup: name,
    line: {color: colour, width, dash}});
  return out;
}

function measuredTrace(curve, name) {
  const trace = {x: curve.x, y: curve.y, mode: "markers", name,
    marker: {color: "#000", size: 4}};
  if (curve.std && curve.std.some((v) => v !== null)) {
    trace.error_y = {type: "data", array: curve.std, visible: true, thickness: 1, width: 0,
      color: "#555"};
  }
  return trace;
}

/** Traces and y-axis title of the S(E) panel from whatever is known. */
function seTraces() {
  const traces = [];
  let colour = 0;
  const next = () => COLOURS[colour++ % COLOURS.length];
  const c = state.comparison;
  if (c && c.overlay) {
    for (const curve of c.overlay) {
      if (curve.role === "measured") traces.push(measuredTrace(curve, curve.label));
      else if (curve.role === "partial") {
        traces.push(...lineTraces(curve, curve.label, next(), {dash: "dot", width: 1.2,
          band: false}));
      } else traces.push(...lineTraces(curve, curve.label, next()));
    }
    const units = c.overlay[0].units;
    return {traces, ytitle: "intensity" + (units ? ` (${units})` : "")};
  }
  const p = state.prediction;
  if (p) {
    traces.push(...lineTraces(p.spectra.s_e, `predicted ${shortLabel(p.geometry)}`, next()));
    for (const [name, curve] of Object.entries(p.spectra)) {
      if (name !== "s_e" && curve.element) {
        traces.push(...lineTraces(curve, `predicted ${curve.element}`, next(),
          {dash: "dot", width: 1.2, band: false}));
      }
    }
  }
  const job = state.job && state.job.result;
  if (job && job.spectra.s_e) {
    const curve = maxNormalised(job.spectra.s_e);
    traces.push(...lineTraces(curve, `phonons ${shortLabel(job.geometry)}`, next()));
  }
  const m = state.measuredData;
  if (m) {
    for (const [name, data] of Object.entries(m.data)) {
      if (data.x) traces.push(measuredTrace(maxNormalised(data), `${m.name} ${name}`));
    }
  }
  return {traces, ytitle: "intensity (max-normalised)"};
}

function maxNormalised(curve) {
  const top = curve.y.reduce((m, v) => (v !== null && v > m ? v : m), 0);
  const k = top > 0 ? 1 / top : 1;
  const scale = (arr) => (arr ? arr.map((v) => (v === null ? null : v * k)) : null);
  return {...curve, y: scale(curve.y), std: scale(curve.std)};
}

function energyLabel() {
  for (const source of [state.comparison, state.prediction, state.job && state.job.result,
    state.measuredData]) {
    if (source && source.energy_label) return source.energy_label;
  }
  const label = {"cm-1": "cm⁻¹", "ueV": "µeV"}[settings().unit] || settings().unit;
  return `energy transfer (${label})`;
}

function renderSE() {
  const div = $("plot-se");
  const {traces, ytitle} = seTraces();
  if (!traces.length) {
    if (window.Plotly) Plotly.purge(div);
    state.sePlotted = null;
    return;
  }
  const layout = {margin: {t: 30, r: 20, b: 50, l: 70}, hovermode: "closest",
    xaxis: {title: {text: energyLabel()}, zeroline: false},
    yaxis: {title: {text: ytitle}, zeroline: true},
    legend: {orientation: "h", y: -0.2}};
  state.sePlotted = Plotly.react(div, traces, layout, PLOT_CONFIG);
}

function fmt(v, digits = 3) {
  return v === null || v === undefined ? "—" : Number(v).toPrecision(digits);
}

function renderMetrics() {
  const table = $("metrics");
  const body = table.querySelector("tbody");
  body.replaceChildren();
  const c = state.comparison;
  $("compare-notes").textContent = c
    ? [`Resolution matched to ${c.resolution}.`, ...c.notes,
      ...c.pairs.filter((p) => p.note).map((p) => `${p.a} vs ${p.b}: ${p.note}`)].join(" ")
    : "";
  table.hidden = !c;
  if (!c) return;
  for (const p of c.pairs) {
    const shifts = p.peaks ? p.peaks.shifts_meV.map((v) => v.toFixed(2)).join(", ") : "—";
    const fit = p.fit;
    const cells = [`${p.a} vs ${p.b}`, p.n_points, fmt(p.mse), fmt(p.cosine, 4),
      p.wasserstein_meV === null ? "—" : p.wasserstein_meV.toFixed(2), shifts || "none",
      fit ? fmt(fit.chi2_per_dof) : "—",
      fit ? `${fmt(fit.scale)} ± ${fmt(fit.scale_std, 2)}` : "—"];
    const row = document.createElement("tr");
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = String(text);
      row.appendChild(td);
    }
    body.appendChild(row);
  }
}

/** Largest finite value of a map (0 when there is none). */
function mapTop(z) {
  let top = 0;
  for (const row of z) for (const v of row) if (v !== null && v > top) top = v;
  return top;
}

/** Highest energy where some |Q| has more than 1e-3 of the map's maximum, plus 10 %. */
function mapExtent(map, top) {
  let last = map.e.length - 1;
  while (last > 0 && !map.z[last].some((v) => v !== null && v > 1e-3 * top)) last -= 1;
  return map.e[Math.min(map.e.length - 1, last)] * 1.1;
}

/**
 * A map as a heatmap: a logarithmic colour scale (four decades below the maximum, as the
 * package's PNG plots) unless `signed` (a residual: linear, blue-white-red around zero);
 * `crop` limits the energy axis to where the map has intensity.
 */
function heatmap(div, map, title, {signed = false, crop = false} = {}) {
  const top = mapTop(map.z);
  const trace = {type: "heatmap", x: map.q, y: map.e, hoverongaps: false};
  if (signed || top <= 0) {
    let m = 1e-300;
    for (const row of map.z) for (const v of row) if (v !== null) m = Math.max(m, Math.abs(v));
    Object.assign(trace, {z: map.z, colorscale: "RdBu", reversescale: true, zmin: -m, zmax: m,
      colorbar: {title: {text: map.units || ""}}});
  } else {
    const floor = top * 1e-4;
    Object.assign(trace, {
      z: map.z.map((row) => row.map((v) => (v === null ? null : Math.log10(Math.max(v, floor))))),
      customdata: map.z, colorscale: "Viridis",
      hovertemplate: "Q %{x:.3g} 1/Å<br>E %{y:.4g}<br>I %{customdata:.3g}<extra></extra>",
      colorbar: {title: {text: `log₁₀ I${map.units ? ` (${map.units})` : ""}`}}});
  }
  const yaxis = {title: {text: energyLabel()}};
  if (crop && top > 0) yaxis.range = [map.e[0], mapExtent(map, top)];
  const layout = {title: {text: title, font: {size: 14}}, margin: {t: 40, r: 10, b: 50, l: 70},
    xaxis: {title: {text: "Q (1/Å)"}}, yaxis};
  div.hidden = false;
  Plotly.react(div, [trace], layout, PLOT_CONFIG);
}

function hideMap(div) {
  if (window.Plotly) Plotly.purge(div);
  div.hidden = true;
}

function renderMaps() {
  const c = state.comparison;
  const job = state.job && state.job.result;
  const p = state.prediction;
  let calc = null;
  let measured = null;
  let residual = null;
  if (c && c.maps) {
    const label = "phonons" in c.maps ? "phonons" : "predicted";
    calc = {map: c.maps[label], title: `${label} S(Q,E), on the measured grid`};
    measured = {map: c.maps.measured, title: "measured S(Q,E)"};
    if (c.maps.residual) {
      residual = {map: c.maps.residual, title: c.maps.residual.label, signed: true};
    }
  } else {
    // the phonons' map when they were computed for the settings shown, else the prediction's
    const jobShown = job && job.map &&
      (!p || !p.map || job.geometry.key === p.geometry.key);
    const seenBy = (g) => (g.direct ? `, ${g.label}` : "");
    if (jobShown) {
      calc = {map: job.map, title: `phonons: powder S(Q,E)${seenBy(job.geometry)}`,
        crop: true};
    } else if (p && p.map) {
      calc = {map: p.map, title: `predicted powder S(Q,E)${seenBy(p.geometry)}`, crop: true};
    }
    const m = state.measuredData;
    if (m) {
      const name = Object.keys(m.data).find((k) => m.data[k].z);
      if (name) measured = {map: m.data[name], title: `measured ${name}`};
    }
  }
  $("map-section").hidden = !(calc || measured);
  for (const [id, item] of [["plot-map", calc], ["plot-measured-map", measured],
    ["plot-residual", residual]]) {
    if (item) heatmap($(id), item.map, item.title, item);
    else hideMap($(id));
  }
}

function downloadLinks(box, downloads, what) {
  box.replaceChildren();
  if (!downloads) return;
  box.append(`${what}: `);
  for (const [fmt, url] of Object.entries(downloads)) {
    const a = document.createElement("a");
    a.href = url;
    a.textContent = {h5: "HDF5", csv: "CSV", png: "PNG"}[fmt] || fmt;
    a.setAttribute("download", "");
    box.append(a, " ");
  }
}

function renderDownloads() {
  downloadLinks($("downloads"), state.prediction && state.prediction.downloads,
    "prediction");
  const job = state.job && state.job.result;
  downloadLinks($("job-downloads"), job && job.downloads, "phonons");
}

function renderJob() {
  const job = state.job;
  const bar = $("job-progress");
  bar.hidden = !job;
  if (!job) {
    $("job-message").textContent = "";
    return;
  }
  bar.value = job.progress || 0;
  let text = job.message;
  if (job.state === "queued") text = `waiting (${job.position} ahead in the queue)`;
  if (job.state === "failed") text = `failed: ${job.message}`;
  if (job.state === "done" && job.result) {
    const r = job.result;
    text = `done: ${r.formula}, supercell ${r.supercell.join("×")}, ` +
      `${r.n_displacements} displacements, ${r.geometry.label} at ${r.temperature_K} K`;
  }
  $("job-message").textContent = text;
  $("compute-phonons").disabled = !(state.structure && state.status &&
    state.status.model.available) || job.state === "queued" || job.state === "running";
}

// ------------------------------------------------------------------------------ wiring

function wireDrop(zone, input, handler) {
  input.addEventListener("change", () => {
    handler(input.files[0]);
    input.value = "";
  });
  zone.addEventListener("dragover", (ev) => {
    ev.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (ev) => {
    ev.preventDefault();
    zone.classList.remove("over");
    if (ev.dataTransfer.files.length) handler(ev.dataTransfer.files[0]);
  });
}

async function restore() {
  const p = readFragment();
  if (p.get("instrument")) $("instrument").value = p.get("instrument");
  for (const [key, id] of Object.entries(GEOMETRY_INPUTS)) {
    if (p.get(key) !== null) $(id).value = p.get(key);
  }
  renderGeometryControls();
  if (p.get("unit")) $("unit").value = p.get("unit");
  if (p.get("T")) $("temperature").value = p.get("T");
  try {
    if (p.get("structure")) {
      state.structure = await api(`/api/structure/${encodeURIComponent(p.get("structure"))}`);
      renderStructure();
    }
    if (p.get("measured")) {
      const m = await api(`/api/measured/${encodeURIComponent(p.get("measured"))}`);
      state.measured = m;
      renderMeasuredInfo();
    }
  } catch (err) {
    showError(err.message);
  }
  if (p.get("job")) {
    state.job = {job_id: p.get("job"), state: "queued", progress: 0, message: "", result: null};
  }
  if (state.structure || state.measured || state.job) await refresh();
  if (state.job && (state.job.state === "queued" || state.job.state === "running")) {
    schedulePoll();
  }
}

async function main() {
  wireDrop($("drop-structure"), $("structure-file"), uploadStructure);
  wireDrop($("drop-measured"), $("measured-file"), uploadMeasured);
  $("instrument").addEventListener("change", renderGeometryControls);
  for (const id of ["instrument", "unit", "background", "measured-name",
    ...Object.values(GEOMETRY_INPUTS)]) {
    $(id).addEventListener("change", refresh);
  }
  renderGeometryControls();
  $("temperature").addEventListener("change", refresh);
  $("compute-phonons").addEventListener("click", startJob);
  try {
    state.status = await api("/api/status");
    renderStatus();
  } catch (err) {
    showError(err.message);
    return;
  }
  renderPredictionNote();
  await restore();
}

document.addEventListener("DOMContentLoaded", main);
