"""A local stand-in for the WeChat Work group-robot webhook, strict as its documentation.

The real endpoint (developer.work.weixin.qq.com, doc 91770) cannot be reached from tests.  This
server checks each request as the provider documents it: POST to /cgi-bin/webhook/send with
the robot key in the query, a JSON body whose msgtype is text or markdown, content within the
byte limits (text 2,048, markdown 4,096, UTF-8).  A request that breaks a rule gets the error
code the provider uses and is recorded as rejected, so a test sees what was wrong.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LIMITS = {"text": 2048, "markdown": 4096}


@dataclass
class Received:
    body: dict
    at: float


@dataclass
class WeComRobot:
    key: str = "test-robot-key"
    accepted: list[Received] = field(default_factory=list)
    rejected: list[tuple[str, bytes]] = field(default_factory=list)

    def check(self, method: str, path: str, headers, raw: bytes) -> tuple[int, dict]:
        url = urlsplit(path)
        if method != "POST":
            return 405, {"errcode": 43002, "errmsg": "require POST method"}
        if url.path != "/cgi-bin/webhook/send":
            return 404, {"errcode": 404, "errmsg": f"unknown path {url.path}"}
        if parse_qs(url.query).get("key") != [self.key]:
            return 200, {"errcode": 93000, "errmsg": "invalid webhook url"}
        if not headers.get("Content-Type", "").startswith("application/json"):
            return 200, {"errcode": 40035, "errmsg": "invalid content type"}
        try:
            body = json.loads(raw)
        except ValueError:
            return 200, {"errcode": 40035, "errmsg": "invalid json"}
        msgtype = body.get("msgtype")
        if msgtype not in LIMITS or not isinstance(body.get(msgtype), dict):
            return 200, {"errcode": 40008, "errmsg": "invalid message type"}
        content = body[msgtype].get("content")
        if not isinstance(content, str) or not content:
            return 200, {"errcode": 44004, "errmsg": "empty content"}
        if len(content.encode()) > LIMITS[msgtype]:
            return 200, {"errcode": 40058, "errmsg": f"content exceed max length {LIMITS[msgtype]}"}
        self.accepted.append(Received(body, time.time()))
        return 200, {"errcode": 0, "errmsg": "ok"}


class WeComServer:
    """Runs a :class:`WeComRobot` on a loopback port in a background thread."""

    def __init__(self, robot: WeComRobot | None = None) -> None:
        self.robot = robot or WeComRobot()
        robot_ = self.robot

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, answer = robot_.check(self.command, self.path, self.headers, raw)
                if answer.get("errcode"):
                    robot_.rejected.append((answer["errmsg"], raw))
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_GET = _answer

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/cgi-bin/webhook/send?key={self.robot.key}"

    def __enter__(self) -> WeComServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
