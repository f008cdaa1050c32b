"""A stand-in for llorch-worker in xtask's tests: takes the worker's flags, answers GET /health
with 503 while "loading" and then 200 with a WorkerHealth body, and fails on demand, so the
pool and daemon code is tested without llama.cpp or a model.

`--model missing-model` exits at once with an error, like a worker that cannot find its model;
`--model never-ready` keeps answering 503.

Like the real worker, once "loaded" it registers with `--orchestrator-url` (with the bearer
token of `--worker-token-file`), heartbeats, deregisters on SIGTERM, and reports how
registering goes in /health's `registration`.
"""

import argparse
import json
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
parser.add_argument("--model-id")
parser.add_argument("--backend", required=True)
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--worker-id", required=True)
parser.add_argument("--orchestrator-url")
parser.add_argument("--model-base-dir")
parser.add_argument("--gpu")
parser.add_argument("--advertise-url")
parser.add_argument("--worker-token-file")
parser.add_argument("--load-seconds", type=float, default=0.5)
args, extra = parser.parse_known_args()
# Like the real worker: registers under --model-id when given, else under --model.
model_id = args.model_id or args.model

print(f"fake worker {args.worker_id}: model {args.model} on {args.backend}, "
      f"orchestrator {args.orchestrator_url}, models in {args.model_base_dir}, extra {extra}",
      flush=True)
if args.model == "missing-model":
    print("error: model `missing-model` is not in the catalog", file=sys.stderr, flush=True)
    sys.exit(1)

ready_at = time.monotonic() + args.load_seconds
advertised = args.advertise_url or f"http://{args.host}:{args.port}"
token = None
if args.worker_token_file:
    with open(args.worker_token_file) as file:
        token = next(line.strip() for line in file if line.strip() and not line.startswith("#"))
registration = None
lock = threading.Lock()


def call(method, path, body=None):
    request = urllib.request.Request(
        args.orchestrator_url.rstrip("/") + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json"},
    )
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status


def report(state, error=None):
    global registration
    with lock:
        failures = 0 if error is None else (registration or {}).get("failures", 0) + 1
        registration = {
            "orchestrator_url": args.orchestrator_url,
            "state": state,
            "advertised_url": advertised,
            "failures": failures,
        }
        if error is not None:
            registration["last_error"] = error


def register_loop():
    while time.monotonic() < ready_at or args.model == "never-ready":
        time.sleep(0.05)
    report("pending")
    registered = False
    while True:
        try:
            if not registered:
                call("POST", "/workers/register", {
                    "worker_id": args.worker_id, "url": advertised, "model": model_id,
                    "backend": args.backend, "slots": 1, "ctx_size": 512,
                })
                registered = True
                report("registered")
                print("fake worker: registered with orcd", flush=True)
            else:
                call("POST", f"/workers/{args.worker_id}/heartbeat",
                     {"slots_busy": 0, "slots_total": 1})
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            if error.code == 404 and registered:
                registered = False
                continue
            state = "refused" if 400 <= error.code < 500 else "pending"
            hint = "pass --worker-token-file" if error.code == 401 else "see orcd's message"
            report(state, f"orcd at {args.orchestrator_url} refused the registration "
                          f"({error.code}): {detail}\nhint: {hint}")
            print(f"fake worker: registering failed: {error.code} {detail}", flush=True)
        except OSError as error:
            report("pending", f"orcd at {args.orchestrator_url} did not answer: {error}"
                              "\nhint: check --orchestrator-url")
        time.sleep(1 if registered else 0.3)


if args.orchestrator_url:
    threading.Thread(target=register_loop, daemon=True).start()


class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/health":
            self.send_error(404)
            return
        loading = args.model == "never-ready" or time.monotonic() < ready_at
        health = {
            "status": "loading" if loading else "ready",
            "model": model_id,
            "slots_total": 1,
            "slots_busy": 0,
        }
        with lock:
            if registration is not None:
                health["registration"] = registration
        body = json.dumps(health).encode()
        self.send_response(503 if loading else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *arguments):
        pass


def on_sigterm(_signal, _frame):
    print("fake worker: SIGTERM, shutting down", flush=True)
    if args.orchestrator_url:
        try:
            call("DELETE", f"/workers/{args.worker_id}")
        except (OSError, urllib.error.HTTPError):
            pass
    sys.exit(0)


signal.signal(signal.SIGTERM, on_sigterm)
server = ThreadingHTTPServer((args.host, args.port), Health)
print(f"llorch-worker listening on http://{args.host}:{args.port}", flush=True)
server.serve_forever()
