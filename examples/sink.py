#!/usr/bin/env python3
"""A local stand-in for Slack and any HTTP target: prints what it receives.

    python3 examples/sink.py [PORT]     # default 9999

Answers 200 "ok" to every POST (as a Slack incoming webhook does) and prints
the path, the Idempotency-Key and the JSON body. Set SINK_STATUS=503 to make
it fail, to watch clickup-bridge retry.
"""
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            shown = json.dumps(json.loads(body), indent=2, ensure_ascii=False)
        except ValueError:
            shown = body.decode("utf-8", "replace")
        status = int(os.environ.get("SINK_STATUS", "200"))
        print(f"POST {self.path}  Idempotency-Key: {self.headers.get('Idempotency-Key')}  -> {status}\n{shown}\n", flush=True)
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9999
    print(f"sink listening on http://127.0.0.1:{port}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Sink).serve_forever()
