#!/usr/bin/env python3
"""A local stand-in for Slack, Jira, the ClickUp API and any HTTP target.

    python3 examples/sink.py [PORT]     # default 9999

It prints every request it receives (method, path, Idempotency-Key, JSON
body) and answers like the real service would, enough for the shipped
routes.yaml to run end to end without any account:

  POST /slack, /audit, ...                  200 "ok" (a Slack incoming webhook)
  GET  /clickup/api/v2/task/{id}            a task named "Demo task {id}", tagged bug
  PUT  /clickup/api/v2/task/{id}            the task
  POST /clickup/api/v2/task/{id}/comment    {"id": ...}
  POST /jira/rest/api/3/issue               201 {"id": ..., "key": "OPS-<n>"}
  POST /jira/rest/api/3/issue/{key}/comment 201 {"id": ...}

Set SINK_STATUS=503 to make every answer fail and watch clickup-bridge retry.
"""
import itertools
import json
import os
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ISSUES = itertools.count(1)


def task(task_id):
    return {
        "id": task_id,
        "name": f"Demo task {task_id}",
        "text_content": "Steps to reproduce: open the login page.",
        "url": f"https://app.clickup.com/t/{task_id}",
        "status": {"status": "complete"},
        "tags": [{"name": "bug"}],
    }


class Sink(BaseHTTPRequestHandler):
    def answer(self, status, body):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if not isinstance(body, bytes) else "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self):
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length) if length else b""
        try:
            shown = json.dumps(json.loads(body), indent=2, ensure_ascii=False) if body else ""
        except ValueError:
            shown = body.decode("utf-8", "replace")
        forced = int(os.environ.get("SINK_STATUS", "0"))
        key = self.headers.get("Idempotency-Key")
        print(f"{self.command} {self.path}  Idempotency-Key: {key}\n{shown}\n", flush=True)
        if forced:
            return self.answer(forced, b"failing on purpose")
        path = self.path.split("?")[0]
        m = re.fullmatch(r"/clickup/api/v2/task/([^/]+)", path)
        if m:
            return self.answer(200, task(m.group(1)))
        if re.fullmatch(r"/clickup/api/v2/task/[^/]+/comment", path):
            return self.answer(200, {"id": "90120000001", "hist_id": "h1", "date": 1568036964079})
        if path == "/jira/rest/api/3/issue":
            n = next(ISSUES)
            return self.answer(201, {"id": str(10000 + n), "key": f"OPS-{n}"})
        if re.fullmatch(r"/jira/rest/api/3/issue/[^/]+/comment", path):
            return self.answer(201, {"id": "10010"})
        if path == "/jira/rest/api/3/search/jql":
            return self.answer(200, {"issues": [], "isLast": True})
        return self.answer(200, b"ok")

    do_GET = do_POST = do_PUT = handle_any

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9999
    print(f"sink listening on http://127.0.0.1:{port}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Sink).serve_forever()
