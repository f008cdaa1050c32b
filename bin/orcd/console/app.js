// The console's entry point: page switching (#fleet, #hosts, #throughput, #chat), asking for the API
// token when orcd answers 401, and following `GET /v2/events` (reconnecting when it drops).

import { onUnauthorized, readEvents, request, setToken, token, Unauthorized } from "./api.js";
import { initChat } from "./chat.js";
import { applyEvent, initFleet, renderFleet } from "./fleet.js";
import { onPlacementEvent, showHosts } from "./hosts.js";
import { initThroughput, renderThroughput } from "./throughput.js";

const PAGES = ["fleet", "hosts", "throughput", "chat"];
const RECONNECT_MS = 2000;

const $ = (id) => document.getElementById(id);

function showPage() {
  const wanted = location.hash.slice(1);
  const page = PAGES.includes(wanted) ? wanted : "fleet";
  for (const name of PAGES) {
    $(`page-${name}`).hidden = name !== page;
    const link = $(`nav-${name}`);
    if (name === page) {
      link.setAttribute("aria-current", "page");
    } else {
      link.removeAttribute("aria-current");
    }
  }
  if (page === "throughput") {
    renderThroughput();
  }
  showHosts(page === "hosts");
}

function setConnection(state, text) {
  const status = $("connection");
  status.dataset.state = state;
  status.textContent = text;
}

let tokenWaiters = [];

/// Resolves once a token was entered in the form that a 401 showed.
function tokenEntered() {
  return new Promise((resolve) => tokenWaiters.push(resolve));
}

function initLogin() {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token-input").value.trim();
    if (!value) {
      return;
    }
    setToken(value);
    $("token-input").value = "";
    $("login").hidden = true;
    $("login-message").textContent = "";
    const waiters = tokenWaiters;
    tokenWaiters = [];
    for (const resolve of waiters) {
      resolve();
    }
  });
  onUnauthorized((message) => {
    const had = token() !== null;
    setToken(null);
    setConnection("error", "401: API token needed");
    $("login").hidden = false;
    $("login-message").textContent = had
      ? `orcd answered 401 Unauthorized: ${message}. Enter the API token again.`
      : `orcd answered 401 Unauthorized: it needs an API token. Enter it to connect.`;
    $("token-input").focus();
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/// Follows the fleet event stream for the page's whole life.
async function followEvents() {
  for (;;) {
    try {
      const response = await request("/v2/events", { headers: { accept: "text/event-stream" } });
      setConnection("live", "live");
      await readEvents(response, (name, data) => {
        applyEvent(name, JSON.parse(data));
        onPlacementEvent(name);
      });
      setConnection("error", "event stream ended; reconnecting");
    } catch (error) {
      if (error instanceof Unauthorized) {
        await tokenEntered();
        setConnection("connecting", "connecting");
        continue;
      }
      setConnection("error", `disconnected (${error.message}); reconnecting`);
    }
    await sleep(RECONNECT_MS);
  }
}

function init() {
  initLogin();
  initFleet();
  initThroughput();
  initChat();
  window.addEventListener("hashchange", showPage);
  showPage();
  // "Last heartbeat" keeps counting between samples.
  setInterval(renderFleet, 1000);
  followEvents();
}

init();
