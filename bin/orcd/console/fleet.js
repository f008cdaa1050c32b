// The fleet as the event stream of `GET /v2/events` describes it, and the Fleet page: workers,
// queue depth per model, recent jobs with cancel buttons.

import { cancelJob } from "./api.js";

const RECENT_FINISHED_JOBS = 50;

/// What the page knows; replaced by each `snapshot`, changed by every other event.
export const fleet = {
  workers: new Map(),
  jobs: new Map(),
  models: [],
  samples: [],
  sampleIntervalMs: 1000,
  /// worker id -> {tokens_per_second, last_seen_ms_ago, received_at}
  workerRates: new Map(),
};

const listeners = [];

/// `listener(eventName)` runs after each applied event.
export function onFleetChange(listener) {
  listeners.push(listener);
}

const HISTORY_MS = 5 * 60 * 1000;

function pruneJobs() {
  const finished = [...fleet.jobs.values()]
    .filter((job) => isFinished(job.state))
    .sort((a, b) => b.submitted_at_ms - a.submitted_at_ms);
  for (const job of finished.slice(RECENT_FINISHED_JOBS)) {
    fleet.jobs.delete(job.job_id);
  }
}

function isFinished(state) {
  return state === "completed" || state === "failed" || state === "cancelled";
}

function applySample(sample) {
  fleet.samples.push(sample);
  const oldest = sample.at_ms - HISTORY_MS;
  while (fleet.samples.length > 0 && fleet.samples[0].at_ms < oldest) {
    fleet.samples.shift();
  }
  const now = performance.now();
  for (const rate of sample.workers) {
    fleet.workerRates.set(rate.worker_id, { ...rate, received_at: now });
    const worker = fleet.workers.get(rate.worker_id);
    if (worker) {
      worker.slots_busy = rate.slots_busy;
    }
  }
}

export function applyEvent(name, data) {
  switch (name) {
    case "snapshot":
      fleet.workers = new Map(data.workers.map((worker) => [worker.worker_id, worker]));
      fleet.jobs = new Map(data.jobs.map((job) => [job.job_id, job]));
      fleet.models = data.models;
      fleet.samples = [];
      fleet.workerRates = new Map();
      fleet.sampleIntervalMs = data.sample_interval_ms;
      for (const sample of data.throughput) {
        applySample(sample);
      }
      break;
    case "worker":
      fleet.workers.set(data.worker_id, data);
      fleet.workerRates.set(data.worker_id, {
        ...(fleet.workerRates.get(data.worker_id) || { tokens_per_second: 0 }),
        last_seen_ms_ago: data.last_seen_ms_ago,
        received_at: performance.now(),
      });
      break;
    case "worker_removed":
      fleet.workers.delete(data.worker_id);
      fleet.workerRates.delete(data.worker_id);
      break;
    case "job":
      fleet.jobs.set(data.job_id, data);
      pruneJobs();
      break;
    case "models":
      fleet.models = data.models;
      break;
    case "throughput":
      applySample(data);
      break;
    default:
      // An event added to orcd later: nothing to draw for it yet.
      return;
  }
  for (const listener of listeners) {
    listener(name);
  }
}

function cell(className, text) {
  const td = document.createElement("td");
  td.className = className;
  td.textContent = text;
  return td;
}

/// Keeps `tbody`'s rows in the order of `keys`, reusing the row of each key so that a focused
/// button keeps its focus while the table updates.
function syncRows(tbody, keys, create, update) {
  const existing = new Map([...tbody.rows].map((row) => [row.dataset.key, row]));
  keys.forEach((key, index) => {
    let row = existing.get(key);
    if (!row) {
      row = create(key);
      row.dataset.key = key;
    }
    existing.delete(key);
    update(row, key);
    if (tbody.rows[index] !== row) {
      tbody.insertBefore(row, tbody.rows[index] || null);
    }
  });
  for (const row of existing.values()) {
    row.remove();
  }
}

function setCells(row, values) {
  values.forEach((value, index) => {
    const td = row.cells[index];
    if (td.textContent !== value) {
      td.textContent = value;
    }
  });
}

export function formatMs(ms) {
  if (ms === null || ms === undefined) {
    return "–";
  }
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function hostOf(url) {
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}

function lastHeartbeat(workerId) {
  const rate = fleet.workerRates.get(workerId);
  if (!rate) {
    return "–";
  }
  const ago = rate.last_seen_ms_ago + (performance.now() - rate.received_at);
  return `${(ago / 1000).toFixed(1)} s ago`;
}

function renderWorkers() {
  const tbody = document.querySelector("#workers tbody");
  const workers = [...fleet.workers.values()].sort((a, b) =>
    a.worker_id.localeCompare(b.worker_id),
  );
  document.getElementById("workers-empty").hidden = workers.length > 0;
  syncRows(
    tbody,
    workers.map((worker) => worker.worker_id),
    (key) => {
      const row = document.createElement("tr");
      row.dataset.workerId = key;
      for (const className of [
        "worker-id", "host", "model", "backend", "number slots", "number slots-free",
        "number tps", "heartbeat", "state",
      ]) {
        row.append(cell(className, ""));
      }
      return row;
    },
    (row, key) => {
      const worker = fleet.workers.get(key);
      const rate = fleet.workerRates.get(key);
      setCells(row, [
        worker.worker_id,
        hostOf(worker.url),
        worker.model,
        worker.backend,
        `${worker.slots_busy}/${worker.slots_total}`,
        String(Math.max(worker.slots_total - worker.slots_busy, 0)),
        rate ? rate.tokens_per_second.toFixed(1) : "–",
        lastHeartbeat(key),
        worker.state,
      ]);
      row.cells[8].className = `state state-${worker.state}`;
    },
  );
}

function renderModels() {
  const tbody = document.querySelector("#models tbody");
  syncRows(
    tbody,
    fleet.models.map((model) => model.model),
    (key) => {
      const row = document.createElement("tr");
      row.dataset.model = key;
      for (const className of ["model", "number", "number", "number queued", "number running"]) {
        row.append(cell(className, ""));
      }
      return row;
    },
    (row, key) => {
      const model = fleet.models.find((entry) => entry.model === key);
      setCells(row, [
        model.model,
        String(model.live_workers),
        `${model.slots_busy}/${model.slots_total}`,
        String(model.queued),
        String(model.running),
      ]);
    },
  );
}

async function cancel(jobId, button) {
  const message = document.getElementById("fleet-message");
  button.disabled = true;
  try {
    const result = await cancelJob(jobId);
    message.textContent = `Cancelled job ${jobId} (it was ${result.previous_state}).`;
  } catch (error) {
    message.textContent = `Cancelling job ${jobId} failed: ${error.message}`;
    button.disabled = false;
  }
}

function renderJobs() {
  const tbody = document.querySelector("#jobs tbody");
  const jobs = [...fleet.jobs.values()].sort((a, b) => {
    const active = Number(isFinished(a.state)) - Number(isFinished(b.state));
    return active || b.submitted_at_ms - a.submitted_at_ms || a.job_id.localeCompare(b.job_id);
  });
  syncRows(
    tbody,
    jobs.map((job) => job.job_id),
    (key) => {
      const row = document.createElement("tr");
      row.dataset.jobId = key;
      const id = cell("job-id", key.slice(0, 8));
      id.title = key;
      row.append(id);
      for (const className of ["state", "model", "worker", "number ttft", "number tokens", "number duration"]) {
        row.append(cell(className, ""));
      }
      const actions = cell("actions", "");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "cancel";
      button.textContent = "Cancel";
      button.setAttribute("aria-label", `Cancel job ${key}`);
      button.addEventListener("click", () => cancel(key, button));
      actions.append(button);
      row.append(actions);
      return row;
    },
    (row, key) => {
      const job = fleet.jobs.get(key);
      const values = [
        key.slice(0, 8),
        job.state,
        job.model,
        job.worker_id || "–",
        formatMs(job.time_to_first_token_ms),
        String(job.generated_tokens),
        formatMs(job.duration_ms),
      ];
      values.forEach((value, index) => {
        if (row.cells[index].textContent !== value) {
          row.cells[index].textContent = value;
        }
      });
      row.cells[1].className = `state state-${job.state}`;
      row.dataset.state = job.state;
      row.querySelector("button.cancel").hidden = isFinished(job.state);
    },
  );
}

export function renderFleet() {
  renderWorkers();
  renderModels();
  renderJobs();
}

export function initFleet() {
  onFleetChange(renderFleet);
  renderFleet();
}
