"""``callboard worker --health-port``: the worker's health over HTTP, for a probe.

Three paths, each answering :meth:`runtime.Runtime.health` as JSON:

- ``/livez``: 200 while the runtime runs, else 503 (a liveness probe: restart);
- ``/readyz``: 200 while it can record runs, else 503 (a readiness probe: it may
  recover by itself, as when the database comes back);
- ``/healthz``: the same as ``/readyz``.

Anything else is 404. The answers come from the runtime's memory, never from
the store, so a probe is answered at once while the database is away. The
server is the standard library's, on a daemon thread, and logs nothing.
"""

from __future__ import annotations

import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from runtime._runtime import Runtime

PATHS: Final = {"/livez": "live", "/readyz": "ready", "/healthz": "ready"}
"""Each path, and the field of the health that makes it 200."""


class HealthServer(ThreadingHTTPServer):
    """An HTTP server that answers health probes for ``runtime``; bound when made."""

    daemon_threads = True

    def __init__(self, host: str, port: int, runtime: Runtime) -> None:
        super().__init__((host, port), _Handler)
        self.runtime = runtime
        self._thread = threading.Thread(
            target=self.serve_forever, name="callboard-health", daemon=True
        )

    @property
    def url(self) -> str:
        """Where it listens, as ``http://HOST:PORT`` (the port chosen, for a port 0)."""
        host, port = self.server_address[:2]
        shown = host.decode() if isinstance(host, bytes) else host
        return f"http://{shown}:{port}"

    def start(self) -> None:
        """Answer probes from now on, on a thread of its own."""
        self._thread.start()

    def close(self) -> None:
        """Stop answering and let go of the port."""
        if self._thread.is_alive():
            self.shutdown()
            self._thread.join()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: HealthServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        field = PATHS.get(path)
        if field is None:
            body = b'{"error": "not found: /livez, /readyz or /healthz"}\n'
            self._answer(HTTPStatus.NOT_FOUND, body)
            return
        health = self.server.runtime.health()
        ok = bool(getattr(health, field))
        body = (health.model_dump_json() + "\n").encode()
        self._answer(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def _answer(self, status: HTTPStatus, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Nothing: a probe every few seconds would fill the worker's stderr."""
