"""A real HTTP server on loopback that receives webhook and record feed POSTs."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """Records every POST; refuses with 503 while ``failing`` (requests still to refuse) is
    above zero, then answers ``status``. Tests may set ``failing`` at any time.

    Each request is kept as a dict: ``raw`` and ``body`` (the JSON), and the ``signature``,
    ``delivery`` and ``attempt`` headers (``signature`` is None when not sent).
    """

    def __init__(self, path: str = "/feed", failing: int = 0, status: int = 204) -> None:
        self.failing = failing
        self.requests: list[dict[str, Any]] = []
        self.accepted: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                entry = {
                    "raw": raw,
                    "body": json.loads(raw),
                    "signature": self.headers.get("X-Expertline-Signature"),
                    "delivery": self.headers["X-Expertline-Delivery"],
                    "attempt": int(self.headers["X-Expertline-Attempt"]),
                }
                receiver.requests.append(entry)
                if receiver.failing > 0:
                    receiver.failing -= 1
                    self.send_response(503)
                else:
                    receiver.accepted.append(entry)
                    self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{path}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def items(self, kind: str) -> list[dict[str, Any]]:
        """The items of every accepted record feed page of ``kind``, in order."""
        return [i for e in self.accepted if e["body"]["kind"] == kind for i in e["body"]["items"]]

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
