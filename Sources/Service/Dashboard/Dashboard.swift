import HTTP

/// `GET /`: the dashboard, one self-contained page (no external assets, works offline).
/// It lists jobs with status and progress, plots the selected job's loss, statistics,
/// validation and reward curves by polling its metrics, marks its best checkpoint on them,
/// shows its latest checkpoint's sample grid and the tail of its log. It asks for an API key (kept in the browser) or reads `#key=…&job=…` from the address.
enum Dashboard {
    static func add(to router: inout Router) {
        let page = Array(html.utf8)
        router.addPublic("GET", "/") { _ in
            HTTPResponse(status: 200, headers: [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-cache"),
                                                ("Content-Security-Policy", "default-src 'self'; img-src 'self' blob:; style-src 'unsafe-inline'; script-src 'unsafe-inline'")],
                         body: .bytes(page))
        }
    }

    static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>preftune</title>
<style>
  :root { --fg: #1d2330; --muted: #6b7280; --line: #e5e7eb; --accent: #2563eb; --bg: #fafafa; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
  header { display: flex; gap: 12px; align-items: center; padding: 10px 18px; border-bottom: 1px solid var(--line); background: #fff; }
  header h1 { font-size: 17px; margin: 0 12px 0 0; }
  header input { flex: 0 1 380px; padding: 5px 8px; border: 1px solid var(--line); border-radius: 4px; font: inherit; }
  #status { color: var(--muted); }
  main { display: grid; grid-template-columns: minmax(420px, 1fr) minmax(420px, 1.2fr); gap: 16px; padding: 16px 18px; }
  section { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 12px 14px; min-width: 0; overflow-x: auto; }
  h2 { font-size: 14px; margin: 0 0 8px; }
  table { width: 100%; border-collapse: collapse; }
  th, td { text-align: left; padding: 5px 6px; border-bottom: 1px solid var(--line); white-space: nowrap; }
  th { color: var(--muted); font-weight: 500; }
  tr.job { cursor: pointer; }
  tr.job:hover { background: #f3f4f6; }
  tr.job.selected { background: #eef2ff; }
  .bar { width: 110px; height: 8px; background: var(--line); border-radius: 4px; overflow: hidden; display: inline-block; vertical-align: middle; }
  .bar span { display: block; height: 100%; background: var(--accent); }
  .status-running { color: #047857; } .status-failed { color: #b91c1c; } .status-succeeded { color: #1d4ed8; } .status-cancelled, .status-paused { color: var(--muted); }
  .charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 10px; }
  .chart { border: 1px solid var(--line); border-radius: 4px; padding: 4px 6px; }
  .chart div { font-size: 12px; color: var(--muted); display: flex; justify-content: space-between; }
  .chart.selection { border-color: #f59e0b; }
  #best { margin: 0 0 8px; }
  canvas { width: 100%; height: 120px; display: block; }
  pre { margin: 0; max-height: 260px; overflow: auto; font: 12px/1.4 ui-monospace, Menlo, monospace; background: #0f172a; color: #e2e8f0; padding: 8px; border-radius: 4px; }
  #grid img { image-rendering: pixelated; max-width: 100%; border: 1px solid var(--line); }
  .muted { color: var(--muted); }
  .error { color: #b91c1c; }
</style>
</head>
<body>
<header>
  <h1>preftune</h1>
  <input id="key" type="password" placeholder="API key (Bearer); kept in this browser" autocomplete="off">
  <span id="status"></span>
</header>
<main>
  <section>
    <h2>Jobs</h2>
    <table>
      <thead><tr><th>job</th><th>status</th><th>method</th><th>progress</th><th>samples/s</th><th>model</th></tr></thead>
      <tbody id="jobs"><tr><td colspan="6" class="muted">enter an API key</td></tr></tbody>
    </table>
  </section>
  <section id="detail">
    <h2 id="detail-title">Select a job</h2>
    <div id="best" class="muted"></div>
    <div class="charts" id="charts"></div>
    <h2 style="margin-top:14px">Latest samples</h2>
    <div id="grid" class="muted">no checkpoint yet</div>
    <h2 style="margin-top:14px">Log</h2>
    <pre id="log"></pre>
  </section>
</main>
<script>
"use strict";
// One page, no external assets: it polls the API with the key the user gives
// (or #key=… in the address) and draws the curves on canvases.
const state = { key: "", selected: null, gridURL: null };
const $ = (id) => document.getElementById(id);
const hash = new URLSearchParams(location.hash.slice(1));
state.key = hash.get("key") || localStorage.getItem("preftune.key") || "";
state.selected = hash.get("job");
$("key").value = state.key;
$("key").addEventListener("change", () => { state.key = $("key").value.trim(); localStorage.setItem("preftune.key", state.key); refresh(); });

async function api(path, as = "json") {
  const response = await fetch(path, { headers: { Authorization: "Bearer " + state.key } });
  if (!response.ok) {
    let message = response.status + "";
    try { message = (await response.json()).error.message; } catch (_) {}
    throw new Error(message);
  }
  return as === "json" ? response.json() : as === "blob" ? response.blob() : response.text();
}

function text(value) { return value === null || value === undefined ? "" : String(value); }

function renderJobs(jobs) {
  const body = $("jobs");
  body.textContent = "";
  if (jobs.length === 0) { body.innerHTML = '<tr><td colspan="6" class="muted">no jobs yet</td></tr>'; return; }
  for (const job of jobs) {
    const row = document.createElement("tr");
    row.className = "job" + (job.id === state.selected ? " selected" : "");
    row.dataset.jobId = job.id;
    row.dataset.status = job.status;
    const total = job.progress.total_steps || 0, step = job.progress.step || 0;
    const percent = total ? Math.min(100, 100 * step / total) : 0;
    const cells = [job.id, job.status, job.method && job.method.type, null,
                   job.progress.samples_per_s ? Math.round(job.progress.samples_per_s) : "", job.fine_tuned_model || job.model];
    cells.forEach((value, i) => {
      const cell = document.createElement("td");
      if (i === 3) {
        cell.innerHTML = '<span class="bar"><span style="width:' + percent.toFixed(1) + '%"></span></span> ' + step + "/" + total;
      } else {
        cell.textContent = text(value);
        if (i === 1) cell.className = "status-" + job.status;
      }
      row.appendChild(cell);
    });
    row.addEventListener("click", () => { state.selected = job.id; state.gridURL = null; refresh(); });
    body.appendChild(row);
  }
}

// The best checkpoint's step is marked on every curve by a dashed line (and a dot where the curve has a point there).
function drawChart(canvas, steps, values, bestStep) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 260, height = canvas.clientHeight || 120;
  canvas.width = width * ratio; canvas.height = height * ratio;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  const finite = values.filter(Number.isFinite);
  if (finite.length === 0) return 0;
  let low = Math.min(...finite), high = Math.max(...finite);
  if (high === low) { high += 1e-9; low -= 1e-9; }
  const first = steps[0], last = steps[steps.length - 1] === first ? first + 1 : steps[steps.length - 1];
  const x = (s) => 4 + (width - 8) * (s - first) / (last - first);
  const y = (v) => height - 4 - (height - 8) * (v - low) / (high - low);
  g.strokeStyle = "#2563eb"; g.lineWidth = 1.5; g.beginPath();
  let plotted = 0;
  steps.forEach((s, i) => {
    if (!Number.isFinite(values[i])) return;
    if (plotted === 0) g.moveTo(x(s), y(values[i])); else g.lineTo(x(s), y(values[i]));
    plotted += 1;
  });
  g.stroke();
  if (bestStep !== null && bestStep >= first && bestStep <= last) {
    g.strokeStyle = "#f59e0b"; g.setLineDash([3, 3]); g.beginPath();
    g.moveTo(x(bestStep), 2); g.lineTo(x(bestStep), height - 2); g.stroke(); g.setLineDash([]);
    const at = steps.indexOf(bestStep);
    if (at >= 0 && Number.isFinite(values[at])) {
      g.fillStyle = "#f59e0b"; g.beginPath(); g.arc(x(bestStep), y(values[at]), 3.5, 0, 2 * Math.PI); g.fill();
    }
  }
  return plotted;
}

// Training curves first, then validation (val_*) and grading (reward_*), then the rest.
function rank(name) {
  const order = ["loss", "val_loss", "reward_mean", "reward_win_rate", "grad_norm", "lr", "samples_per_s"];
  const at = order.indexOf(name);
  return at >= 0 ? at : name.startsWith("val_") ? 10 : name.startsWith("reward_") ? 11 : 20;
}

function renderCharts(series, best) {
  const charts = $("charts");
  const names = Object.keys(series).sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  for (const name of names) {
    let box = charts.querySelector('[data-series="' + name + '"]');
    if (!box) {
      box = document.createElement("div");
      box.className = "chart"; box.dataset.series = name;
      box.innerHTML = "<div><span></span><span></span></div><canvas></canvas>";
      box.querySelector("span").textContent = name;
      charts.appendChild(box);
    }
    const { steps, values } = series[name];
    const canvas = box.querySelector("canvas");
    const bestStep = best ? best.step_number : null;
    canvas.dataset.points = drawChart(canvas, steps, values, bestStep);
    box.classList.toggle("selection", !!best && best.metric === name);
    if (bestStep !== null) box.dataset.bestStep = bestStep; else delete box.dataset.bestStep;
    box.querySelectorAll("span")[1].textContent = values.length ? Number(values[values.length - 1]).toPrecision(4) + " @ " + steps[steps.length - 1] : "";
  }
}

async function renderDetail(job) {
  $("detail-title").textContent = job.id + " · " + job.status + (job.error ? " · " + job.error.message : "");
  const [metrics, checkpoints, log] = await Promise.all([
    api("/v1/fine_tuning/jobs/" + job.id + "/metrics?max_points=300"),
    api("/v1/fine_tuning/jobs/" + job.id + "/checkpoints?limit=1"),
    api("/v1/fine_tuning/jobs/" + job.id + "/logs?tail=40", "text"),
  ]);
  const best = job.best_checkpoint;
  const banner = $("best");
  if (best) {
    banner.dataset.step = best.step_number;
    banner.textContent = "Best checkpoint: step " + best.step_number + " (" + best.metric + " " + Number(best.value).toPrecision(4) + ")"
      + (job.result === "best" ? ", published as the result" : "") + (job.parent_job ? " · forked from " + job.parent_job + " at step " + job.from_step : "");
  } else {
    delete banner.dataset.step;
    banner.textContent = job.parent_job ? "forked from " + job.parent_job + " at step " + job.from_step : "";
  }
  renderCharts(metrics.series, best);
  const pre = $("log");
  const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  pre.textContent = log;
  if (atBottom) pre.scrollTop = pre.scrollHeight;
  const latest = checkpoints.data[0];
  if (latest && latest.sample_grid_url && latest.sample_grid_url !== state.gridURL) {
    const blob = await api(latest.sample_grid_url, "blob");
    const image = new Image();
    image.alt = "samples at step " + latest.step_number;
    image.onload = () => { image.dataset.loaded = "true"; };
    image.src = URL.createObjectURL(blob);
    const grid = $("grid");
    grid.textContent = "";
    grid.appendChild(image);
    const caption = document.createElement("div");
    caption.className = "muted";
    caption.textContent = "step " + latest.step_number + ", the job's first prompts, 4 samples each";
    grid.appendChild(caption);
    state.gridURL = latest.sample_grid_url;
  }
}

async function refresh() {
  if (!state.key) return;
  try {
    const jobs = (await api("/v1/fine_tuning/jobs?limit=50")).data;
    if (!state.selected && jobs.length) state.selected = jobs[0].id;
    renderJobs(jobs);
    const job = jobs.find((j) => j.id === state.selected);
    if (job) await renderDetail(job);
    $("status").textContent = "updated " + new Date().toLocaleTimeString();
    $("status").className = "";
  } catch (error) {
    $("status").textContent = error.message;
    $("status").className = "error";
  }
}

refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
"""#
}
