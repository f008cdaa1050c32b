// The Throughput page: tok/s and queue depth per model over the last minutes, drawn as SVG
// polylines from the `throughput` samples of the event stream.

import { fleet, onFleetChange } from "./fleet.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 600;
const HEIGHT = 200;
const LEFT = 40;
const BOTTOM = 20;
const TOP = 18;
const WINDOW_MS = 5 * 60 * 1000;
const SERIES_CLASSES = 6;

function svg(tag, attributes, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) {
    node.setAttribute(name, String(value));
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

function modelNames() {
  const names = new Set(fleet.models.map((model) => model.model));
  for (const sample of fleet.samples) {
    for (const model of sample.models) {
      names.add(model.model);
    }
  }
  return [...names].sort();
}

/// Draws one chart: a line per model of `value(modelSample)` against time.
function drawChart(chart, names, value, unit) {
  const end = fleet.samples.length ? fleet.samples[fleet.samples.length - 1].at_ms : Date.now();
  const start = end - WINDOW_MS;
  let max = 1;
  for (const sample of fleet.samples) {
    for (const model of sample.models) {
      max = Math.max(max, value(model));
    }
  }
  max = niceCeiling(max);
  const x = (at) => LEFT + ((at - start) / WINDOW_MS) * (WIDTH - LEFT - 4);
  const y = (v) => HEIGHT - BOTTOM - (v / max) * (HEIGHT - BOTTOM - TOP);
  const nodes = [
    svg("line", { class: "axis", x1: LEFT, y1: y(0), x2: WIDTH - 4, y2: y(0) }),
    svg("line", { class: "axis", x1: LEFT, y1: y(max), x2: WIDTH - 4, y2: y(max) }),
    svg("text", { x: 4, y: y(max) + 4 }, formatValue(max)),
    svg("text", { x: 4, y: y(0) + 4 }, "0"),
    svg("text", { x: LEFT, y: HEIGHT - 4 }, "-5 min"),
    svg("text", { x: WIDTH - 40, y: HEIGHT - 4 }, "now"),
  ];
  const latest = [];
  names.forEach((name, index) => {
    const points = [];
    let last = 0;
    for (const sample of fleet.samples) {
      if (sample.at_ms < start) {
        continue;
      }
      const model = sample.models.find((entry) => entry.model === name);
      last = model ? value(model) : 0;
      points.push(`${x(sample.at_ms).toFixed(1)},${y(last).toFixed(1)}`);
    }
    const series = `series-${index % SERIES_CLASSES}`;
    if (points.length > 0) {
      nodes.push(svg("polyline", { class: series, points: points.join(" ") }));
    }
    nodes.push(
      svg("text", { class: `legend ${series}`, x: LEFT + 6 + index * 150, y: 13 },
        `${name}: ${formatValue(last)}`),
    );
    latest.push(`${name} ${formatValue(last)} ${unit}`);
  });
  chart.replaceChildren(...nodes);
  chart.setAttribute(
    "aria-description",
    latest.length ? `latest: ${latest.join(", ")}` : "no model is served yet",
  );
}

function niceCeiling(value) {
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) {
    if (value <= step * power) {
      return step * power;
    }
  }
  return 10 * power;
}

function formatValue(value) {
  return value >= 100 || Number.isInteger(value) ? String(Math.round(value)) : value.toFixed(1);
}

function renderTable() {
  const tbody = document.querySelector("#throughput-now tbody");
  const latest = fleet.samples[fleet.samples.length - 1];
  const rows = (latest ? latest.models : []).map((model) => {
    const row = document.createElement("tr");
    row.dataset.model = model.model;
    for (const [className, text] of [
      ["model", model.model],
      ["number tps", model.tokens_per_second.toFixed(1)],
      ["number queued", String(model.queued)],
      ["number running", String(model.running)],
    ]) {
      const td = document.createElement("td");
      td.className = className;
      td.textContent = text;
      row.append(td);
    }
    return row;
  });
  tbody.replaceChildren(...rows);
}

export function renderThroughput() {
  if (document.getElementById("page-throughput").hidden) {
    return;
  }
  const names = modelNames();
  drawChart(document.getElementById("chart-tps"), names, (model) => model.tokens_per_second, "tok/s");
  drawChart(document.getElementById("chart-queue"), names, (model) => model.queued, "queued");
  renderTable();
}

export function initThroughput() {
  onFleetChange((name) => {
    if (name === "throughput" || name === "snapshot") {
      renderThroughput();
    }
  });
}
