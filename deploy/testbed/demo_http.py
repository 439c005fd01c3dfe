"""A tiny HTTP service for the restart testbed: GET / answers 200 with its pid.

Run by supervisord as program `demo` (see demo-service.sh); the restart playbook brings it back
after it is killed.
"""

from __future__ import annotations

import http.server
import json
import os
import sys


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = json.dumps({"service": "demo", "pid": os.getpid()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # keep supervisord's log quiet
        pass


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 18080
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
