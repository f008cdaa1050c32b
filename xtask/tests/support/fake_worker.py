"""A stand-in for llorch-worker in xtask's tests: takes the worker's flags, answers GET /health
with 503 while "loading" and then 200 with a WorkerHealth body, and fails on demand, so the
pool and daemon code is tested without llama.cpp or a model.

`--model missing-model` exits at once with an error, like a worker that cannot find its model;
`--model never-ready` keeps answering 503.
"""

import argparse
import json
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
parser.add_argument("--backend", required=True)
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--worker-id", required=True)
parser.add_argument("--orchestrator-url")
parser.add_argument("--model-base-dir")
parser.add_argument("--gpu")
parser.add_argument("--load-seconds", type=float, default=0.5)
args, extra = parser.parse_known_args()

print(f"fake worker {args.worker_id}: model {args.model} on {args.backend}, "
      f"orchestrator {args.orchestrator_url}, models in {args.model_base_dir}, extra {extra}",
      flush=True)
if args.model == "missing-model":
    print("error: model `missing-model` is not in the catalog", file=sys.stderr, flush=True)
    sys.exit(1)

ready_at = time.monotonic() + args.load_seconds


class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/health":
            self.send_error(404)
            return
        loading = args.model == "never-ready" or time.monotonic() < ready_at
        body = json.dumps({
            "status": "loading" if loading else "ready",
            "model": args.model,
            "slots_total": 1,
            "slots_busy": 0,
        }).encode()
        self.send_response(503 if loading else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *arguments):
        pass


def on_sigterm(_signal, _frame):
    print("fake worker: SIGTERM, shutting down", flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, on_sigterm)
server = ThreadingHTTPServer((args.host, args.port), Health)
print(f"llorch-worker listening on http://{args.host}:{args.port}", flush=True)
server.serve_forever()
