"""A loopback stand-in for InfluxDB 2's write endpoint that refuses points beyond its retention.

Only for the answer a real server is hard to make give on demand: InfluxDB 2.x drops points
older than the bucket's retention, keeps the others of the request, and answers ``422`` with
``partial write: points beyond retention policy dropped=N`` (VictoriaMetrics drops such points
silently, and the Debian InfluxDB 1.6 has no v2 write endpoint).  ``down`` makes it answer 503,
as a server restarting does.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class InfluxStandIn:
    def __init__(self, retention_s: float) -> None:
        self.retention_s = retention_s
        self.points: set[str] = set()  # a point written twice is one point, as in InfluxDB
        self.down = False
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                if stand_in.down:
                    return self._answer(503, {"code": "unavailable", "message": "restarting"})
                oldest_ms = (time.time() - stand_in.retention_s) * 1000
                lines = [line for line in body.splitlines() if line]
                kept = [line for line in lines if int(line.rsplit(" ", 1)[1]) >= oldest_ms]
                stand_in.points.update(kept)
                if len(kept) < len(lines):
                    return self._answer(
                        422,
                        {
                            "code": "unprocessable entity",
                            "message": "failure writing points to database: partial write: points "
                            f"beyond retention policy dropped={len(lines) - len(kept)}",
                        },
                    )
                self.send_response(204)
                self.end_headers()

            def _answer(self, status: int, answer: dict[str, str]) -> None:
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> InfluxStandIn:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
