// Firelake's dashboard (QuickSight's part): saved queries as charts and tables, the lake's
// tables as they grow, and the pipeline's health, each refreshing on its own.
// Everything comes from the query service's own API; uPlot (shipped in the package) draws.
"use strict";

const REPORT_SECONDS = 15;
const LIVE_SECONDS = 5;
const COLORS = ["#3366cc", "#dc3912", "#ff9900", "#109618", "#990099", "#0099c6", "#dd4477"];

// Errors are kept on the page itself so a headless browser test can read them.
function noteError(text) {
  const body = document.body;
  body.dataset.errors = (body.dataset.errors ? body.dataset.errors + "\n" : "") + text;
}
window.addEventListener("error", (event) => noteError(String(event.message)));
const consoleError = console.error.bind(console);
console.error = (...args) => {
  noteError(args.map(String).join(" "));
  consoleError(...args);
};
window.addEventListener("unhandledrejection", (event) => noteError(String(event.reason)));

function apiKey() {
  return localStorage.getItem("firelake-key") || "";
}

async function api(path, body) {
  const headers = { "Accept": "application/json" };
  const key = apiKey();
  if (key) headers["Authorization"] = "Bearer " + key;
  const init = { headers };
  if (body !== undefined) {
    init.method = "POST";
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const answer = await response.json();
  if (response.status === 401) {
    document.getElementById("key-box").hidden = false;
  }
  if (!response.ok) {
    const error = answer.error || {};
    throw new Error(`${error.code || response.status}: ${error.message || "failed"}`);
  }
  return answer;
}

function element(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function cell(value) {
  if (value === null || value === undefined) return "NULL";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function table(result, limit) {
  const wrap = element("div", { class: "scroll" });
  const grid = element("table");
  const head = element("tr");
  for (const column of result.columns) head.appendChild(element("th", {}, column.name));
  grid.appendChild(head);
  for (const row of result.rows.slice(0, limit)) {
    const line = element("tr");
    row.forEach((value) => {
      line.appendChild(element("td", typeof value === "number" ? { class: "num" } : {}, cell(value)));
    });
    grid.appendChild(line);
  }
  wrap.appendChild(grid);
  return wrap;
}

function isIsoTime(value) {
  return typeof value === "string" && /^\d{4}-\d\d-\d\dT\d\d:\d\d/.test(value);
}

// A category's label on the x axis, cut short so neighbours do not run into each other
// (the table below the chart has the whole value).
function shortLabel(value) {
  const text = cell(value);
  return text.length > 16 ? text.slice(0, 15) + "…" : text;
}

// A chart of a result: x and y columns, optionally a series column: one line per value,
// or for bars one bar per (x, series) pair, coloured by series — never a sum over series,
// which would draw, say, two languages' pass rates of 0.6 and 1 as one bar of 1.6.
function chart(target, spec, result) {
  const names = result.columns.map((c) => c.name);
  const xi = names.indexOf(spec.x);
  const yi = names.indexOf(spec.y);
  const si = spec.series ? names.indexOf(spec.series) : -1;
  if (xi < 0 || yi < 0) {
    throw new Error(`chart columns ${spec.x}, ${spec.y} are not in the result (${names.join(", ")})`);
  }
  const rows = result.rows;
  if (!rows.length) {
    target.appendChild(element("p", { class: "about" }, "no rows yet"));
    return false;
  }
  const bars = spec.kind === "bar";
  const grouped = si >= 0;
  const keyOf = (r) => (grouped && bars ? `${cell(r[xi])} · ${cell(r[si])}` : r[xi]);
  const keys = [...new Set(rows.map(keyOf))];
  const numeric = keys.every((k) => typeof k === "number");
  const time = keys.every(isIsoTime);
  if (numeric) keys.sort((a, b) => a - b);
  if (time) keys.sort((a, b) => Date.parse(a) - Date.parse(b));
  const position = new Map(keys.map((k, i) => [k, i]));
  const xs = keys.map((k, i) => (time ? Date.parse(k) / 1000 : numeric ? k : i));
  const seriesNames = grouped ? [...new Set(rows.map((r) => String(r[si])))] : [spec.y];
  const data = [xs];
  for (const name of seriesNames) {
    const ys = keys.map(() => null);
    for (const r of rows) {
      if (grouped && String(r[si]) !== name) continue;
      const at = position.get(keyOf(r));
      ys[at] = (ys[at] === null ? 0 : ys[at]) + Number(r[yi]);
    }
    data.push(ys);
  }
  // What is drawn, readable by a headless browser test: the x keys and each series' values.
  target.dataset.x = JSON.stringify(keys);
  target.dataset.series = JSON.stringify(Object.fromEntries(seriesNames.map((n, i) => [n, data[i + 1]])));
  const series = [{ label: spec.x }];
  seriesNames.forEach((name, i) => {
    const color = COLORS[i % COLORS.length];
    series.push({
      label: name,
      stroke: color,
      fill: bars ? color + "99" : undefined,
      width: bars ? 1 : 2,
      paths: bars ? uPlot.paths.bars({ size: [0.7, 60] }) : undefined,
      points: { show: !bars && xs.length < 40 },
    });
  });
  const categorical = !numeric && !time;
  const integers = numeric && keys.every(Number.isInteger);
  const width = Math.max(320, (target.clientWidth || 560) - 8);
  // Labels that would run into each other when level are slanted (about 7 px a character).
  const crowded = categorical && keys.length * Math.max(...keys.map((k) => shortLabel(k).length)) * 7 > width;
  const axes = [
    categorical
      ? {
          values: (u, splits) => splits.map((v) => (Number.isInteger(v) ? shortLabel(keys[v] ?? "") : "")),
          ...(crowded ? { rotate: -40, size: 90 } : {}),
        }
      : integers
        ? { values: (u, splits) => splits.map((v) => (Number.isInteger(v) ? String(v) : "")) }
        : {},
    {},
  ];
  // Counts are drawn from zero, so bars compare by their height.
  const scales = { x: { time }, y: { range: (u, low, high) => [Math.min(0, low), high > 0 ? high * 1.1 : 1] } };
  if (categorical || bars) {
    const low = Math.min(...xs);
    const high = Math.max(...xs);
    const pad = xs.length > 1 ? (high - low) / (xs.length - 1) / 2 : 0.5;
    scales.x.range = () => [low - pad, high + pad];
  }
  new uPlot({ width, height: 240, series, axes, scales, legend: { show: seriesNames.length > 1 } }, data, target);
  return true;
}

const reportCards = new Map();

async function runReport(query) {
  let card = reportCards.get(query.name);
  if (!card) {
    card = element("div", { class: "report", id: "report-" + query.name });
    card.appendChild(element("h3", {}, query.name));
    card.appendChild(element("p", { class: "about" }, query.description || ""));
    card.appendChild(element("div", { class: "body" }));
    document.getElementById("reports").appendChild(card);
    reportCards.set(query.name, card);
  }
  const body = card.querySelector(".body");
  try {
    const result = await api(`/v1/queries/${encodeURIComponent(query.name)}`, {});
    body.replaceChildren();
    const spec = query.chart || { kind: "table" };
    if (spec.kind !== "table") {
      const plot = element("div", { class: "chart" });
      body.appendChild(plot);
      if (chart(plot, spec, result)) {
        document.body.dataset.rendered = String(Number(document.body.dataset.rendered) + 1);
        card.dataset.chart = "drawn";
      }
    }
    body.appendChild(table(result, 50));
    const scanned = result.bytes_scanned === null ? "unknown" : result.bytes_scanned;
    body.appendChild(
      element(
        "p",
        { class: "meta" },
        `${result.row_count} rows · ${result.elapsed_seconds.toFixed(3)} s · ` +
          `${result.files_read ?? "?"} files · ${scanned} bytes scanned · $${result.billed_usd.toFixed(8)}`,
      ),
    );
  } catch (error) {
    body.replaceChildren(element("p", { class: "error" }, String(error.message)));
  }
}

async function refreshReports() {
  const listed = await api("/v1/queries");
  const runnable = listed.queries.filter((q) => !q.view && q.parameters.every((p) => !p.required));
  await Promise.all(runnable.map(runReport));
}

let previousTables = null;

async function refreshTables() {
  const { tables } = await api("/v1/tables");
  const now = Date.now() / 1000;
  const grid = element("table");
  const head = element("tr");
  for (const name of ["table", "rows", "rows/s", "files", "partitions", "latest partition", "not read"]) {
    head.appendChild(element("th", {}, name));
  }
  grid.appendChild(head);
  for (const t of tables) {
    const before = previousTables && previousTables.rows.get(t.name);
    const rate = before === undefined || !previousTables ? "" : ((t.rows - before) / (now - previousTables.at)).toFixed(1);
    const latest = t.latest_partition ? `${t.latest_partition.dt} ${String(t.latest_partition.hour).padStart(2, "0")}h` : "";
    const line = element("tr");
    [t.name, t.rows, rate, t.files, t.partitions.length, latest, t.problems.length].forEach((v) => {
      line.appendChild(element("td", typeof v === "number" ? { class: "num" } : {}, cell(v)));
    });
    grid.appendChild(line);
  }
  previousTables = { at: now, rows: new Map(tables.map((t) => [t.name, t.rows])) };
  const panel = document.getElementById("tables");
  panel.replaceChildren(tables.length ? grid : element("p", {}, "no tables in the lake yet"));
}

let previousHealth = null;

async function refreshHealth() {
  const health = await api("/v1/pipeline");
  const now = Date.now() / 1000;
  const panel = document.getElementById("health");
  panel.replaceChildren();
  const grid = element("table");
  const head = element("tr");
  for (const name of ["stage", "state", "events/s", "events", "dead-lettered", "lag"]) {
    head.appendChild(element("th", {}, name));
  }
  grid.appendChild(head);
  const seen = new Map();
  for (const stage of health.stages) {
    const before = previousHealth && previousHealth.events.get(stage.name);
    const rate = before === undefined || !previousHealth ? "" : ((stage.events - before) / (now - previousHealth.at)).toFixed(1);
    seen.set(stage.name, stage.events);
    const line = element("tr");
    [stage.name, stage.state, rate, stage.events, stage.dead_lettered, stage.lag].forEach((v) => {
      line.appendChild(element("td", typeof v === "number" ? { class: "num" } : {}, cell(v)));
    });
    grid.appendChild(line);
  }
  previousHealth = { at: now, events: seen };
  panel.appendChild(grid);
  if (health.dlq) {
    const dlq = element("div", { class: "chart", id: "dlq-chart" });
    panel.appendChild(element("h3", {}, "Dead-lettered events by reason"));
    panel.appendChild(dlq);
    if (chart(dlq, { kind: "bar", x: "error_type", y: "events" }, health.dlq)) {
      document.body.dataset.rendered = String(Number(document.body.dataset.rendered) + 1);
    }
  }
  if (health.notes.length) panel.appendChild(element("p", { class: "about" }, health.notes.join(" · ")));
}

function every(seconds, task) {
  const run = () =>
    task()
      .then(() => {
        document.getElementById("status").textContent = "updated " + new Date().toLocaleTimeString();
      })
      .catch((error) => {
        document.getElementById("status").textContent = String(error.message);
      });
  run();
  setInterval(run, seconds * 1000);
}

document.getElementById("key").addEventListener("change", (event) => {
  localStorage.setItem("firelake-key", event.target.value);
  location.reload();
});

every(REPORT_SECONDS, refreshReports);
every(LIVE_SECONDS, refreshTables);
every(LIVE_SECONDS, refreshHealth);
