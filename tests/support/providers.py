"""What every fake notification provider shares: a loopback HTTP server that can be in trouble.

A fake checks each request as its provider documents it (subclasses do that in ``check``) and
counts what it accepted by the key the provider would see (the notice number we send along),
so a test can say "every notice arrived exactly once".  ``trouble`` makes it misbehave the
way providers do: down (HTTP 503), a provider error code in a 200 answer, no answer in time,
or "too many requests".
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Trouble(StrEnum):
    NONE = "none"
    DOWN = "down"  # HTTP 503 from the provider's front end, nothing accepted
    ERROR_CODE = "error-code"  # a valid request refused with the provider's error code
    TIMEOUT = "timeout"  # no answer for ``hang_s``, nothing accepted
    THROTTLE = "throttle"  # the provider's "too many requests" answer


@dataclass
class Received:
    key: str  # what identifies the notice at the provider (notice number, client_msg_id)
    body: Any
    at: float


class Refused(Exception):
    """A request that breaks the provider's documented rules: HTTP status and answer."""

    def __init__(self, status: int, answer: dict[str, Any]) -> None:
        super().__init__(json.dumps(answer, ensure_ascii=False))
        self.status = status
        self.answer = answer


class FakeProvider:
    """Subclasses: ``check`` a request (raise Refused) and return what was received or, for a
    request that delivers nothing (a token fetch), None with the answer to give."""

    hang_s = 3.0

    def __init__(self) -> None:
        self.trouble = Trouble.NONE
        self.accepted: list[Received] = []
        self.rejected: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()

    def check(
        self, method: str, path: str, headers: Any, raw: bytes
    ) -> tuple[Received | None, dict[str, Any]]:
        raise NotImplementedError

    def error_answer(self) -> tuple[int, dict[str, Any]]:
        raise NotImplementedError

    def throttle_answer(self) -> tuple[int, dict[str, Any]]:
        raise NotImplementedError

    def ok_answer(self, received: Received) -> dict[str, Any]:
        raise NotImplementedError

    def delivered(self) -> Counter[str]:
        """How often each notice arrived."""
        with self.lock:
            return Counter(r.key for r in self.accepted)

    def answer(self, method: str, path: str, headers: Any, raw: bytes) -> tuple[int, dict]:
        trouble = self.trouble
        if trouble is Trouble.DOWN:
            return 503, {"message": "service unavailable"}
        if trouble is Trouble.TIMEOUT:
            time.sleep(self.hang_s)
            return 504, {"message": "gateway time-out"}
        with self.lock:
            try:
                received, answer = self.check(method, path, headers, raw)
            except Refused as refused:
                self.rejected.append((str(refused), raw))
                return refused.status, refused.answer
            if received is None:
                return 200, answer
            if trouble is Trouble.ERROR_CODE:
                return self.error_answer()
            if trouble is Trouble.THROTTLE:
                return self.throttle_answer()
            self.accepted.append(received)
            return 200, self.ok_answer(received)


class ProviderServer:
    """Runs a :class:`FakeProvider` on a loopback port in a background thread."""

    def __init__(self, provider: FakeProvider) -> None:
        self.provider = provider
        fake = provider

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, answer = fake.answer(self.command, self.path, self.headers, raw)
                data = json.dumps(answer, ensure_ascii=False).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (a time-out test)

            do_POST = do_GET = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> ProviderServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
