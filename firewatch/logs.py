"""Log output: readable lines for a terminal, or JSON lines for a log collector.

``FIREWATCH_LOG_FORMAT=json`` writes one JSON object per record (Loki, Elasticsearch and
``docker compose logs | jq`` read them without parsing rules), with stdlib logging only, so
every library's records come out the same way as ours.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
#: libraries that log at INFO on every connection or state change
NOISY = ("amqtt", "transitions", "pymodbus", "httpx")
#: attributes every LogRecord has; anything else came in through ``extra=`` and is kept
_RECORD_ATTRIBUTES = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, extras, and
    the process's name when it has one (a child of ``firewatch up``)."""

    def __init__(self, process: str | None = None) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.process is not None:
            entry["process"] = self.process
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(
    log_format: LogFormat, verbose: bool = False, quiet: bool = False, process: str | None = None
) -> None:
    """``quiet``: warnings only, for a command the user runs and reads (`firewatch simulate`,
    `user`, `backup`, `bench`), whose output is what was asked for, not every HTTP request,
    migration step or outbox opened on the way; the services log at INFO for the operator.
    ``process``: the name of a child of ``firewatch up``, in each line it writes to the
    terminal it shares with the others."""
    handler = logging.StreamHandler()
    text_format = (
        TEXT_FORMAT if process is None else TEXT_FORMAT.replace("%(name)s", f"[{process}] %(name)s")
    )
    formatter = JsonFormatter(process) if log_format == "json" else logging.Formatter(text_format)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def progress(line: str) -> None:
    """A stage of a long command (a backup, a benchmark), on stderr: stdout keeps what was
    asked for (a report, --json's line) for whoever reads or parses it."""
    print(line, file=sys.stderr, flush=True)
