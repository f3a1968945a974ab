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
NOISY = ("amqtt", "transitions", "pymodbus")
#: attributes every LogRecord has; anything else came in through ``extra=`` and is kept
_RECORD_ATTRIBUTES = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(log_format: LogFormat, verbose: bool = False, quiet: bool = False) -> None:
    """``quiet``: warnings only, for a command the user runs and reads (`firewatch simulate`,
    `user`, `backup`, `bench`), whose output is what was asked for, not every HTTP request,
    migration step or outbox opened on the way; the services log at INFO for the operator."""
    handler = logging.StreamHandler()
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
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
