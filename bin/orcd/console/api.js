// Talking to orcd: the API token (kept for this tab only), authenticated fetch, and a reader
// of server-sent events over fetch (EventSource cannot send an Authorization header).

const TOKEN_KEY = "llorch.console.token";

export class Unauthorized extends Error {}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) {
    sessionStorage.setItem(TOKEN_KEY, value);
  } else {
    sessionStorage.removeItem(TOKEN_KEY);
  }
}

const unauthorizedListeners = [];

/// `listener(message)` runs whenever orcd answers 401: the page then asks for the token again.
export function onUnauthorized(listener) {
  unauthorizedListeners.push(listener);
}

function headers(extra) {
  const all = { ...extra };
  const current = token();
  if (current) {
    all.Authorization = `Bearer ${current}`;
  }
  return all;
}

/// The error message of a non-2xx answer: orcd's `{error}` or OpenAI's `{error: {message}}`.
async function errorMessage(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    if (typeof body.error === "string") {
      return body.error;
    }
    if (body.error && typeof body.error.message === "string") {
      return body.error.message;
    }
  } catch {
    // Not JSON: show the text itself.
  }
  return text || response.statusText;
}

/// `fetch` with the token; throws `Unauthorized` (after telling the listeners) on 401 and an
/// `Error` naming the status and orcd's message on any other non-2xx answer.
export async function request(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: headers(options.headers),
    cache: "no-store",
  });
  if (response.status === 401) {
    const message = await errorMessage(response);
    for (const listener of unauthorizedListeners) {
      listener(message);
    }
    throw new Unauthorized(message);
  }
  if (!response.ok) {
    throw new Error(`${response.status}: ${await errorMessage(response)}`);
  }
  return response;
}

export async function getJson(path) {
  return (await request(path)).json();
}

export async function cancelJob(jobId) {
  return (await request(`/v2/tasks/${encodeURIComponent(jobId)}`, { method: "DELETE" })).json();
}

/// Calls `onEvent(name, data)` for each event of an SSE body until it ends or `signal` aborts.
export async function readEvents(response, onEvent, signal) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  const abort = () => reader.cancel().catch(() => {});
  signal?.addEventListener("abort", abort);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        return;
      }
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) {
            continue;
          }
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let value = colon < 0 ? "" : line.slice(colon + 1);
          if (value.startsWith(" ")) {
            value = value.slice(1);
          }
          if (field === "event") {
            name = value;
          } else if (field === "data") {
            data.push(value);
          }
        }
        if (data.length > 0) {
          onEvent(name, data.join("\n"));
        }
      }
    }
  } finally {
    signal?.removeEventListener("abort", abort);
  }
}
