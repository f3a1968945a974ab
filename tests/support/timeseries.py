"""Reading the embedded time-series file (ingest.sqlite_store) from a test, beside the process
that writes it: which gateway messages ingest has stored.

Each (gateway, incarnation) stream keeps the sequence numbers it stored as ranges; a reading is
one row per series and millisecond (its primary key), so a batch stored twice cannot show as
two points: the ranges are what tells what was stored.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path


def stored_messages(timeseries: Path) -> set[tuple[str, str, int]]:
    """(gateway, incarnation, seq) of every message ingest stored."""
    with contextlib.closing(sqlite3.connect(timeseries, timeout=10)) as store:
        ranges = store.execute(
            "SELECT s.gateway_id, s.incarnation, a.first, a.last"
            " FROM applied_seqs a JOIN streams s ON s.id = a.stream_id"
        ).fetchall()
    return {
        (gateway, incarnation, seq)
        for gateway, incarnation, first, last in ranges
        for seq in range(first, last + 1)
    }
