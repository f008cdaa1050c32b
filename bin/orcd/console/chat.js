// The Chat page: a conversation with a chat model (`/v1/chat/completions`) or a completion box
// for a base model (`/v1/completions`), streamed token by token. Stop cancels the job
// (`DELETE /v2/tasks/{id}`, the id from the `x-llorch-job-id` header) so its slot frees at once.
// The conversation is kept in localStorage and survives a reload.

import { cancelJob, getJson, readEvents, request } from "./api.js";
import { fleet, formatMs, onFleetChange } from "./fleet.js";
import { renderMarkdown } from "./markdown.js";

const STORAGE_KEY = "llorch.console.conversation";

/// {model, mode, system, temperature, maxTokens, turns: [{role, content, state, jobId, stats, error}]}
let conversation = load();
/// The answer being streamed: {turn, controller, stopRequested}.
let active = null;
/// Models whose catalog entry has a chat template (`/console/catalog.json`).
let chatModels = new Set();
// Alias → model, from orcd's `[aliases]` (read from `/v1/models`): an alias of a served model
// is offered beside it.
let aliases = {};

const $ = (id) => document.getElementById(id);

function emptyConversation() {
  return { model: "", mode: "chat", system: "", temperature: 0.7, maxTokens: 256, turns: [] };
}

function load() {
  try {
    const stored = JSON.parse(localStorage.getItem(STORAGE_KEY));
    if (stored && Array.isArray(stored.turns)) {
      for (const turn of stored.turns) {
        // A reload cut this answer off; its job went on without us or was cancelled.
        if (turn.state === "streaming" || turn.state === "waiting") {
          turn.state = "interrupted";
        }
      }
      return { ...emptyConversation(), ...stored };
    }
  } catch {
    // A broken entry is replaced by a fresh conversation below.
  }
  return emptyConversation();
}

function save() {
  try {
    localStorage.setItem(STORAGE_KEY, JSON.stringify(conversation));
  } catch (error) {
    $("chat-status").textContent = `The conversation could not be saved: ${error.message}`;
  }
}

function isAnswer(turn) {
  return turn.role === "assistant" || turn.role === "completion";
}

const ROLE_NAMES = {
  system: "System",
  user: "You",
  assistant: "Assistant",
  prompt: "Prompt",
  completion: "Completion",
};

function statsText(turn) {
  if (turn.state === "error") {
    return `error: ${turn.error}`;
  }
  const parts = [];
  if (turn.stats) {
    parts.push(`first token ${formatMs(turn.stats.ttftMs)}`);
    if (turn.stats.tokensPerSecond !== null) {
      parts.push(`${turn.stats.tokensPerSecond.toFixed(1)} tok/s`);
    }
    parts.push(`${turn.stats.tokens} tokens`);
  }
  const state = {
    waiting: "waiting for a slot",
    streaming: "generating",
    stopped: "stopped",
    interrupted: "interrupted by a reload",
    done: "done",
  }[turn.state];
  if (state) {
    parts.push(state);
  }
  return parts.join(" · ");
}

function renderTurn(turn, item = document.createElement("li")) {
  item.className = "turn";
  item.dataset.role = turn.role;
  item.dataset.state = turn.state || "done";
  if (turn.jobId) {
    item.dataset.jobId = turn.jobId;
  }
  const who = document.createElement("p");
  who.className = "who";
  who.textContent = ROLE_NAMES[turn.role] || turn.role;
  const content = document.createElement("div");
  if (isAnswer(turn)) {
    content.className = "content";
    content.append(renderMarkdown(turn.content));
  } else {
    content.className = "content plain";
    content.textContent = turn.content;
  }
  const children = [who, content];
  if (isAnswer(turn)) {
    const stats = document.createElement("p");
    stats.className = "stats";
    stats.textContent = statsText(turn);
    children.push(stats);
  }
  item.replaceChildren(...children);
  return item;
}

function renderTranscript() {
  $("transcript").replaceChildren(...conversation.turns.map((turn) => renderTurn(turn)));
}

function updateTurn(turn) {
  const index = conversation.turns.indexOf(turn);
  const item = $("transcript").children[index];
  if (item) {
    renderTurn(turn, item);
  }
}

function servedModels() {
  const served = fleet.models.filter((model) => model.live_workers > 0).map((model) => model.model);
  const named = Object.entries(aliases)
    .filter(([, model]) => served.includes(model))
    .map(([alias]) => alias);
  return [...served, ...named];
}

// Reads the aliases of the served models from `/v1/models` (entries with `alias_for`).
async function refreshAliases() {
  try {
    const models = await getJson("/v1/models");
    const found = {};
    for (const entry of models.data) {
      if (entry.alias_for) {
        found[entry.id] = entry.alias_for;
      }
    }
    aliases = found;
    renderModelOptions();
  } catch {
    // Without the list the served models are still offered under their own names.
  }
}

// Whether a model (or the model an alias stands for) has a chat template.
function isChatModel(name) {
  return chatModels.has(aliases[name] || name);
}

function renderModelOptions() {
  const select = $("chat-model");
  const served = servedModels();
  const names = [...served];
  if (conversation.model && !names.includes(conversation.model)) {
    names.push(conversation.model);
  }
  const current = [...select.options].map((option) => option.value).join("\n");
  if (current !== names.join("\n")) {
    select.replaceChildren(
      ...names.map((name) => {
        const option = document.createElement("option");
        option.value = name;
        option.textContent = served.includes(name) ? name : `${name} (not served now)`;
        return option;
      }),
    );
  }
  if (!conversation.model && names.length > 0) {
    conversation.model = names.find((name) => isChatModel(name)) || names[0];
    conversation.mode = isChatModel(conversation.model) ? "chat" : "completion";
    applySettings();
  }
  select.value = conversation.model;
  updateButtons();
}

function applySettings() {
  $("chat-model").value = conversation.model;
  $("chat-mode").value = conversation.mode;
  $("chat-system").value = conversation.system;
  $("chat-temperature").value = String(conversation.temperature);
  $("chat-max-tokens").value = String(conversation.maxTokens);
  const chat = conversation.mode === "chat";
  $("system-label").hidden = !chat;
  $("chat-input-label").textContent = chat ? "Message" : "Prompt";
}

function readSettings() {
  conversation.model = $("chat-model").value;
  conversation.mode = $("chat-mode").value;
  conversation.system = $("chat-system").value;
  conversation.temperature = Number.parseFloat($("chat-temperature").value);
  conversation.maxTokens = Number.parseInt($("chat-max-tokens").value, 10);
}

function updateButtons() {
  $("chat-send").disabled = active !== null || !conversation.model;
  $("chat-stop").disabled = active === null;
}

function requestBody(prompt) {
  const common = {
    model: conversation.model,
    temperature: conversation.temperature,
    max_tokens: conversation.maxTokens,
    stream: true,
    stream_options: { include_usage: true },
  };
  if (conversation.mode !== "chat") {
    return ["/v1/completions", { ...common, prompt }];
  }
  const messages = [];
  if (conversation.system.trim()) {
    messages.push({ role: "system", content: conversation.system });
  }
  for (const turn of conversation.turns) {
    if (turn.role === "user") {
      messages.push({ role: "user", content: turn.content });
    } else if (turn.role === "assistant" && turn.state !== "error" && turn.content) {
      messages.push({ role: "assistant", content: turn.content });
    }
  }
  return ["/v1/chat/completions", { ...common, messages }];
}

async function send() {
  readSettings();
  const input = $("chat-input");
  const text = input.value;
  if (!text.trim() || active || !conversation.model) {
    return;
  }
  const chat = conversation.mode === "chat";
  conversation.turns.push({ role: chat ? "user" : "prompt", content: text });
  const [path, body] = requestBody(text);
  const turn = { role: chat ? "assistant" : "completion", content: "", state: "waiting" };
  conversation.turns.push(turn);
  input.value = "";
  save();
  renderTranscript();
  active = { turn, controller: new AbortController(), stopRequested: false };
  updateButtons();
  $("chat-status").textContent = "Generating…";

  const started = performance.now();
  let firstAt = null;
  let pieces = 0;
  let usageTokens = null;
  try {
    const response = await request(path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      signal: active.controller.signal,
    });
    turn.jobId = response.headers.get("x-llorch-job-id");
    turn.state = "streaming";
    updateTurn(turn);
    if (active.stopRequested) {
      await stop();
    }
    await readEvents(
      response,
      (_name, data) => {
        if (data === "[DONE]") {
          return;
        }
        const chunk = JSON.parse(data);
        if (chunk.error) {
          throw new Error(chunk.error.message || String(chunk.error));
        }
        const choice = chunk.choices && chunk.choices[0];
        const piece = choice ? (chat ? choice.delta && choice.delta.content : choice.text) : null;
        if (piece) {
          firstAt ??= performance.now();
          pieces += 1;
          turn.content += piece;
          updateTurn(turn);
        }
        if (chunk.usage) {
          usageTokens = chunk.usage.completion_tokens;
        }
      },
      active.controller.signal,
    );
    turn.state = active.stopRequested ? "stopped" : "done";
  } catch (error) {
    if (active.stopRequested) {
      turn.state = "stopped";
    } else {
      turn.state = "error";
      turn.error = error.message;
    }
  }
  const endedAt = performance.now();
  const tokens = usageTokens ?? pieces;
  turn.stats = {
    ttftMs: firstAt === null ? null : firstAt - started,
    tokensPerSecond:
      firstAt !== null && tokens > 1 && endedAt > firstAt
        ? ((tokens - 1) * 1000) / (endedAt - firstAt)
        : null,
    tokens,
  };
  active = null;
  save();
  updateTurn(turn);
  updateButtons();
  $("chat-status").textContent =
    turn.state === "error" ? `The answer failed: ${turn.error}` : `Answer ${turn.state}.`;
}

/// Cancels the job of the streaming answer, which ends its stream and frees its slot; without
/// a job id yet (or if the cancel fails) the connection is dropped, which orcd treats the same.
async function stop() {
  if (!active) {
    return;
  }
  active.stopRequested = true;
  const { turn, controller } = active;
  if (!turn.jobId) {
    return; // `send` cancels as soon as the id arrives.
  }
  try {
    await cancelJob(turn.jobId);
  } catch {
    controller.abort();
  }
}

function clearConversation() {
  if (active) {
    return;
  }
  readSettings();
  conversation = { ...conversation, turns: [] };
  save();
  renderTranscript();
  $("chat-status").textContent = "Started a new conversation.";
}

export async function initChat() {
  applySettings();
  renderTranscript();
  $("chat-form").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  $("chat-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      send();
    }
  });
  $("chat-stop").addEventListener("click", stop);
  $("chat-clear").addEventListener("click", clearConversation);
  $("chat-settings").addEventListener("change", (event) => {
    readSettings();
    if (event.target.id === "chat-model") {
      conversation.mode = isChatModel(conversation.model) ? "chat" : "completion";
    }
    applySettings();
    save();
    updateButtons();
  });
  $("chat-settings").addEventListener("submit", (event) => event.preventDefault());
  try {
    const catalog = await getJson("/console/catalog.json");
    chatModels = new Set(catalog.chat_models);
  } catch {
    // Without the catalog every model starts in completion mode; the mode can be switched.
  }
  // Only now: the mode a model starts in depends on the catalog.
  onFleetChange((name) => {
    if (name === "snapshot" || name === "models") {
      renderModelOptions();
      refreshAliases();
    }
  });
  renderModelOptions();
  refreshAliases();
  updateButtons();
}
