"""A local WeChat Work group-robot (and Alibaba Cloud SMS) endpoint that records when each notice
arrives.

The alarm-latency benchmark points every institution's robot webhook here
(``/cgi-bin/webhook/send?key=<institution id>``) and compares each arrival time with the moment
the simulator made the event.  Arrival is stamped with ``time.perf_counter()`` as the request
is handled, on the server's own thread, so the figure does not wait for the benchmark's event
loop.  Like the real robot it takes at most 20 messages a minute per key and answers the
provider's 45009 beyond that: a throttled notice then shows as the delay it really is, and is
counted.

The same server takes Alibaba Cloud SendSms requests (``POST /?PhoneNumbers=…``, pointed at by
``FIREWATCH_ALIYUN_SMS_ENDPOINT``), recorded under the mobile number with the template's
variables as content, so that the benchmark sees when a fire-class alarm's second means left
Firewatch.  It checks no signature (the channel's tests do that against a fake that does);
the notifier keeps the provider's one message a minute per number itself.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"
PER_MINUTE = 20
THROTTLED = {"errcode": 45009, "errmsg": "api freq out of limit"}


@dataclass
class Arrival:
    key: str  # the webhook key: which robot (institution) it was sent to
    content: str  # the markdown or text the robot would post
    at: float  # time.perf_counter() when the request was handled


class _Server(ThreadingHTTPServer):
    #: socketserver listens with a backlog of 5: a burst of notices to a hundred robots, each
    #: on a connection of its own, overflowed it, and the kernel dropped connection requests
    #: that the notifier then retried a second or more later, which was timed as alarm latency
    request_queue_size = 1024
    daemon_threads = True


class WebhookRecorder:
    """Run with ``with WebhookRecorder() as robot:``; ``robot.webhook(key)`` is a robot's URL."""

    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []
        self.throttled = 0
        self.lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                at = time.perf_counter()
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                query = parse_qs(urlsplit(self.path).query)
                if "PhoneNumbers" in query:
                    answer = recorder.take_sms(query, at)
                else:
                    answer = recorder.take(query.get("key", [""])[0], raw, at)
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = _Server((HOST, 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def take(self, key: str, raw: bytes, at: float) -> dict[str, Any]:
        body = json.loads(raw)
        content = body.get(body.get("msgtype", ""), {}).get("content", "")
        with self.lock:
            recent = sum(1 for a in self.arrivals if a.key == key and at - a.at < 60)
            if recent >= PER_MINUTE:
                self.throttled += 1
                return THROTTLED
            self.arrivals.append(Arrival(key, content, at))
        return {"errcode": 0, "errmsg": "ok"}

    def take_sms(self, query: dict[str, list[str]], at: float) -> dict[str, Any]:
        phone, content = query["PhoneNumbers"][0], query.get("TemplateParam", [""])[0]
        with self.lock:
            self.arrivals.append(Arrival(phone, json.loads(content or "{}").get("alarm", ""), at))
        return {"Code": "OK", "Message": "OK", "BizId": "bench", "RequestId": "bench"}

    @property
    def sms_endpoint(self) -> str:
        return f"http://{HOST}:{self._server.server_port}"

    def webhook(self, key: str) -> str:
        return f"http://{HOST}:{self._server.server_port}/cgi-bin/webhook/send?key={key}"

    def first(self, key: str, containing: str) -> Arrival | None:
        """The first notice to robot (or mobile number) ``key`` whose content contains
        ``containing``."""
        with self.lock:
            return next(
                (a for a in self.arrivals if a.key == key and containing in a.content), None
            )

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
