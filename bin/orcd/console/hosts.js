// The Hosts page: each pool manager's host from `GET /v2/hosts` (CPU load, RAM and VRAM as
// bars, free disk, models on disk, workers with their log tail) and every model orcd can serve
// from `GET /v1/models`, loaded, loading or unloaded, with Load and Unload buttons (operator
// tokens: orcd answers 403 to others, and the page says so). Read again every few seconds
// while the page is shown, and at once after a placement event.

import { getJson, request } from "./api.js";

const REFRESH_MS = 3000;

const $ = (id) => document.getElementById(id);

let shown = false;
let timer = null;

function mib(bytes) {
  return `${Math.round(bytes / 1048576)} MiB`;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) {
    td.className = className;
  }
  return td;
}

/// A labelled bar: `used` of `total`, with the text beside it.
function bar(container, label, used, total) {
  const wrap = document.createElement("div");
  wrap.className = "usage";
  const meter = document.createElement("meter");
  meter.min = 0;
  meter.max = Math.max(total, 1);
  meter.value = Math.min(used, meter.max);
  meter.high = meter.max * 0.85;
  meter.setAttribute("aria-label", label);
  const text = document.createElement("span");
  text.textContent = `${label} ${mib(used)} / ${mib(total)}`;
  wrap.append(meter, text);
  container.append(wrap);
}

function renderHosts(hosts) {
  const body = $("hosts").tBodies[0];
  body.replaceChildren();
  for (const host of hosts) {
    const facts = host.facts;
    const row = body.insertRow();
    row.dataset.host = host.host_id;
    const name = row.insertCell();
    name.textContent = host.host_id;
    name.title = `${facts.os}, ${facts.cpu_model}`;
    cell(row, host.state);
    const cpu = row.insertCell();
    const load = document.createElement("div");
    load.className = "usage";
    const meter = document.createElement("meter");
    meter.max = Math.max(facts.physical_cores, 1);
    meter.value = Math.min(facts.load_average, meter.max);
    meter.setAttribute("aria-label", "load");
    const text = document.createElement("span");
    text.textContent = `load ${facts.load_average.toFixed(2)} of ${facts.physical_cores} cores`;
    load.append(meter, text);
    cpu.append(load);
    const memory = row.insertCell();
    bar(memory, "RAM", facts.ram_total_bytes - facts.ram_available_bytes, facts.ram_total_bytes);
    if (facts.memory_budget_bytes) {
      const committed = facts.workers.reduce((sum, worker) => sum + worker.estimated_bytes, 0);
      bar(memory, "budget", committed, facts.memory_budget_bytes);
    }
    for (const gpu of facts.gpus) {
      bar(memory, `GPU ${gpu.index}`, gpu.memory_used_bytes, gpu.memory_total_bytes);
    }
    cell(row, mib(facts.disk_free_bytes), "number");
    cell(row, facts.models.map((model) => model.model).join(", ") || "none");
    const workers = row.insertCell();
    for (const worker of facts.workers) {
      const line = document.createElement("div");
      const rss = worker.rss_bytes ? `, ${mib(worker.rss_bytes)}` : "";
      line.textContent = `${worker.worker_id} (${worker.launch.model}, ${worker.state}${rss})`;
      if (worker.last_log && worker.last_log.length > 0) {
        const log = document.createElement("details");
        const summary = document.createElement("summary");
        summary.textContent = "last log lines";
        const pre = document.createElement("pre");
        pre.textContent = worker.last_log.join("\n");
        log.append(summary, pre);
        line.append(log);
      }
      workers.append(line);
    }
    if (facts.workers.length === 0) {
      workers.textContent = "none";
    }
  }
  $("hosts-empty").hidden = hosts.length > 0;
}

async function loadOrUnload(model, action) {
  const message = $("hosts-message");
  message.textContent = `${action === "load" ? "Loading" : "Unloading"} ${model}…`;
  try {
    await request(`/v2/models/${encodeURIComponent(model)}/${action}`, { method: "POST" });
    message.textContent = `${model}: ${action === "load" ? "loaded" : "unloaded"}`;
  } catch (error) {
    message.textContent = `${action} ${model} failed: ${error.message}`;
  }
  refresh();
}

function renderModels(models) {
  const body = $("model-status").tBodies[0];
  body.replaceChildren();
  for (const model of models) {
    const row = body.insertRow();
    row.dataset.model = model.id;
    cell(row, model.id);
    const status = cell(row, model.status || "loaded");
    status.dataset.status = model.status || "loaded";
    const actions = row.insertCell();
    for (const action of ["load", "unload"]) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = action === "load" ? "Load" : "Unload";
      button.disabled = action === "load" ? model.status !== "unloaded" : model.status !== "loaded";
      button.addEventListener("click", () => loadOrUnload(model.id, action));
      actions.append(button);
    }
  }
}

/// Reads the hosts and the models again (quietly keeping the last view on an error).
export async function refresh() {
  try {
    const [hosts, models] = await Promise.all([getJson("/v2/hosts"), getJson("/v1/models")]);
    renderHosts(hosts);
    renderModels(models.data);
  } catch (error) {
    $("hosts-message").textContent = `reading the hosts failed: ${error.message}`;
  }
}

/// Called on every page switch: refreshes while the Hosts page is shown.
export function showHosts(visible) {
  shown = visible;
  clearInterval(timer);
  timer = null;
  if (visible) {
    refresh();
    timer = setInterval(refresh, REFRESH_MS);
  }
}

/// A placement event (`model_loading`, `model_loaded`, ...) changes what the page shows.
export function onPlacementEvent(name) {
  if (shown && (name.startsWith("model_") || name === "load_failed")) {
    refresh();
  }
}
