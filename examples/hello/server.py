"""hello: a tiny HTTP service that says which platform it runs on.

``GET /hello`` answers ``{"arch": ..., "os": ..., "message": ...}``, so pulling
the same tag on x86_64 and on Graviton shows which image each host received.
Standard library only, so the image needs nothing but a Python base image.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def hello() -> dict[str, str]:
    """The body of ``GET /hello``: this host's machine, kernel and a greeting."""
    return {
        "arch": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "message": os.environ.get("HELLO_MESSAGE", "Hello, there!"),
    }


class HelloHandler(BaseHTTPRequestHandler):
    """Routes ``/hello`` and ``/healthz``; everything else is a JSON 404."""

    server_version = "hello/1.0"

    def do_GET(self) -> None:
        """Answer the two routes."""
        path = self.path.split("?", 1)[0]
        if path == "/hello":
            self._send(HTTPStatus.OK, hello())
        elif path == "/healthz":
            self._send(HTTPStatus.OK, {"status": "ok"})
        else:
            self._send(HTTPStatus.NOT_FOUND, {"error": f"no route {path}; try GET /hello"})

    def _send(self, status: HTTPStatus, body: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """One access-log line per request on stderr, as containers expect."""
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def main() -> None:
    """Serve on ``HOST``:``PORT`` (default 0.0.0.0:8080) until SIGTERM or Ctrl-C."""
    host = os.environ.get("HOST", "0.0.0.0")  # noqa: S104 - a container listens on all interfaces
    port = int(os.environ.get("PORT", "8080"))
    server = ThreadingHTTPServer((host, port), HelloHandler)
    # docker stop sends SIGTERM: end cleanly instead of being killed after the grace period.
    # (server.shutdown() would deadlock here: the handler runs in the serving thread.)
    signal.signal(signal.SIGTERM, _stop)
    print(f"hello listening on {host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    main()
