"""`firewatch bench storage`: what a point costs in the embedded store, against the layout before.

The points are the demo's: its three device models (electrical fire monitor, gas detector,
MQTT one-key button) polled every second, each reading the profile's normal value plus its
uniform noise, quantised to the register's scale as the gateway reads it (the button's battery
voltage at 0.01 V), the gateway's poll round stamped with a few tens of milliseconds of
jitter.  The same batches are written, in one write per poll round as ingest takes them, into
the compressed layout (``ingest.sqlite_store``) and into the row-per-reading layout it replaced,
in the same run:

- bytes per point: the file's used pages (after a checkpoint; free pages not counted) over the
  points written, every table included (the series names, the record of applied batches);
  per device-day: that figure for a device polled every second all day;
- an idle device under report by exception: a batch a minute (the heartbeat), for a day;
- write rate: points per second through ``write`` (and the sealing of every hour);
- trend read: the trend of one field over the data written (300 s intervals, as the console
  asks), median of ``repeat`` reads, in both layouts; and in a file of ``scale_devices``
  devices × ``days`` days (idle hours for all, one device polled every second for its last
  24 hours), the 24 h trend of that device.  The large file is built from encoded hours
  copied across series (encoding 1,000 × 7 days point by point would take the bench an hour),
  so its size and key order are a real store's while its building is not timed.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from firewatch.bench.common import percentiles_ms, report, stage, versions
from firewatch.contract import ReadingBatch
from firewatch.profiles import DeviceProfile, load_profiles
from ingest import chunks
from ingest.sqlite_store import CHUNK_MS, LEGACY_POINTS, SCHEMA, SqliteTimeSeries

#: the demo site's models, one of each per institution
DEMO_MODELS = ("generic-efm-4t", "generic-gas-lel", "generic-onekey-mqtt")
#: resolution of readings that come over MQTT rather than from a scaled register
MQTT_RESOLUTION = 0.01
HEARTBEAT_S = 60
GOAL_BYTES_PER_POINT = 10
GOAL_IDLE_BYTES_PER_DEVICE_DAY = 1_000_000
TREND_FIELD = "cable_temp_1"  # of the electrical fire monitor, dev-0


@dataclass(frozen=True)
class Device:
    id: str
    profile: DeviceProfile

    def value(self, name: str, rng: random.Random) -> float:
        """A reading's normal value plus uniform noise, at its register's resolution."""
        sim = self.profile.simulation
        noise = sim.noise.get(name, 0.0)
        value = sim.normal.get(name, 0.0) + rng.uniform(-noise, noise)
        register = next((r for r in self.profile.registers if r.name == name), None)
        if register is None:
            return round(value / MQTT_RESOLUTION) * MQTT_RESOLUTION
        return register.to_physical(round(register.to_raw(value)))

    def reading(self, rng: random.Random) -> dict[str, float]:
        """One poll's readings."""
        return {name: self.value(name, rng) for name in sorted(self.profile.reading_names)}


def demo_devices(count: int) -> list[Device]:
    profiles = load_profiles()
    return [Device(f"dev-{i}", profiles[DEMO_MODELS[i % len(DEMO_MODELS)]]) for i in range(count)]


def poll_rounds(
    devices: list[Device], start: datetime, rounds: int, every_s: float, seed: int
) -> Iterator[list[ReadingBatch]]:
    """One list of batches per poll round, stamped with one time per round as the gateway does."""
    rng = random.Random(seed)
    seq = 0
    for r in range(rounds):
        ts = start + timedelta(seconds=r * every_s, milliseconds=rng.randint(0, 40))
        batch = []
        for d in devices:
            seq += 1
            batch.append(
                ReadingBatch(
                    gateway_id="gw-bench",
                    seq=seq,
                    device_id=d.id,
                    institution_id="bench",
                    kind=d.profile.kind,
                    ts=ts,
                    profile=d.profile.model,
                    readings=d.reading(rng),
                    flags=dict.fromkeys(sorted(d.profile.flag_names), False),
                )
            )
        yield batch


class LegacyLayout:
    """The row-per-reading layout as it was written before, for the baseline."""

    name = "row per reading"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.executescript(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
            + LEGACY_POINTS
            + "CREATE TABLE applied (gateway_id TEXT NOT NULL, incarnation TEXT NOT NULL,"
            " seq INTEGER NOT NULL, PRIMARY KEY (gateway_id, incarnation, seq)) WITHOUT ROWID;"
        )

    async def write(self, batches: list[ReadingBatch]) -> None:
        await asyncio.to_thread(self._write, batches)

    def _write(self, batches: list[ReadingBatch]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany(
            "INSERT INTO applied VALUES (?, ?, ?)",
            [(b.gateway_id, b.incarnation, b.seq) for b in batches],
        )
        self.db.executemany(
            "INSERT INTO points VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    b.device_id,
                    f,
                    b.ts.timestamp(),
                    float(v),
                    b.kind.value,
                    b.institution_id,
                    b.gateway_id,
                )
                for b in batches
                for f, v in (*b.readings.items(), *b.flags.items())
            ],
        )
        self.db.execute("COMMIT")

    def trend(self, device: str, field: str, start: float, end: float, every: float) -> list:
        return self.db.execute(
            "SELECT CAST(ts / :every AS INTEGER) * :every AS bucket, avg(value), min(value),"
            " max(value), count(*) FROM points WHERE device_id = :device AND field = :field"
            " AND ts >= :start AND ts < :end GROUP BY bucket ORDER BY bucket",
            {"every": every, "device": device, "field": field, "start": start, "end": end},
        ).fetchall()


def used_bytes(path: Path) -> tuple[int, dict[str, int]]:
    """Bytes in use (free pages left out, WAL checkpointed), and per table and index."""
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        size = db.execute("PRAGMA page_size").fetchone()[0]
        tables = dict(db.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall())
    return (pages - free) * size, tables


def _median_ms(seconds: list[float]) -> float:
    return round(statistics.median(seconds) * 1000, 2)


async def _write_rounds(store: Any, rounds: list[list[ReadingBatch]]) -> float:
    started = time.perf_counter()
    for batches in rounds:
        await store.write(batches)
    if isinstance(store, SqliteTimeSeries):  # the last, unfinished hour sealed too
        await store.seal(datetime.now(UTC) + timedelta(hours=2))
    return time.perf_counter() - started


async def full_rate(workdir: Path, devices: int, hours: float, repeat: int) -> dict[str, Any]:
    """The demo's polls every second, in both layouts: size, write rate, trend read."""
    fleet = demo_devices(devices)
    rounds_count = int(hours * 3600)
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(
        hours=hours + 1
    )
    rounds = list(poll_rounds(fleet, start, rounds_count, 1.0, seed=15))
    points = sum(len(b.readings) + len(b.flags) for r in rounds for b in r)
    store = SqliteTimeSeries(workdir / "compressed.db")
    await store.open()
    legacy = LegacyLayout(workdir / "legacy.db")
    stage(f"writing {points:,} points into each layout")
    seconds = await _write_rounds(store, rounds)
    legacy_seconds = await _write_rounds(legacy, rounds)
    size, tables = used_bytes(store.path)
    legacy_size, legacy_tables = used_bytes(legacy.path)

    span = (start, start + timedelta(hours=hours + 1))
    reads, legacy_reads = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        await store.history("dev-0", TREND_FIELD, *span, 300)
        reads.append(time.perf_counter() - t)
        t = time.perf_counter()
        await asyncio.to_thread(
            legacy.trend, "dev-0", TREND_FIELD, span[0].timestamp(), span[1].timestamp(), 300
        )
        legacy_reads.append(time.perf_counter() - t)
    await store.close()
    legacy.db.close()
    per_point, legacy_per_point = size / points, legacy_size / points
    points_per_device_day = points / devices / hours * 24
    return {
        "devices": devices,
        "hours": hours,
        "points": points,
        "bytes_per_point": round(per_point, 2),
        "old_bytes_per_point": round(legacy_per_point, 1),
        "bytes_per_device_day": round(per_point * points_per_device_day),
        "old_bytes_per_device_day": round(legacy_per_point * points_per_device_day),
        "write_points_per_s": round(points / seconds),
        "old_write_points_per_s": round(points / legacy_seconds),
        "trend_read_ms": _median_ms(reads),
        "old_trend_read_ms": _median_ms(legacy_reads),
        "tables": tables,
        "old_tables": legacy_tables,
    }


async def idle(workdir: Path, devices: int) -> dict[str, Any]:
    """Idle devices under report by exception: the heartbeat's batch a minute, for a day."""
    fleet = demo_devices(devices)
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=2)
    heartbeats = [
        b for r in poll_rounds(fleet, start, 24 * 3600 // HEARTBEAT_S, HEARTBEAT_S, 16) for b in r
    ]
    # written an hour at a time: the sizes do not depend on how batches are grouped
    rounds = [heartbeats[i : i + 60 * devices] for i in range(0, len(heartbeats), 60 * devices)]
    points = sum(len(b.readings) + len(b.flags) for b in heartbeats)
    store = SqliteTimeSeries(workdir / "idle.db")
    await store.open()
    legacy = LegacyLayout(workdir / "idle-legacy.db")
    stage(f"writing a day of heartbeats of {devices} idle devices into each layout")
    await _write_rounds(store, rounds)
    await _write_rounds(legacy, rounds)
    await store.close()
    legacy.db.close()
    size, _ = used_bytes(store.path)
    legacy_size, _ = used_bytes(legacy.path)
    return {
        "devices": devices,
        "heartbeat_s": HEARTBEAT_S,
        "bytes_per_point": round(size / points, 2),
        "bytes_per_device_day": round(size / devices),
        "old_bytes_per_device_day": round(legacy_size / devices),
    }


def _hour_block(device: Device, every_s: int, rng: random.Random, field: str) -> tuple[int, bytes]:
    """One hour of one field from time 0, encoded: (points, block)."""
    times = [s * 1000 + rng.randint(0, 40) for s in range(0, 3600, every_s)]
    if field in device.profile.flag_names:
        values = [0.0] * len(times)
    else:
        values = [device.value(field, rng) for _ in times]
    return len(times), chunks.encode(times, values)


def build_scale_file(path: Path, devices: int, days: int) -> None:
    """``devices`` × ``days`` of idle hours; dev-0 polled every second for its last 24 hours."""
    rng = random.Random(17)
    fleet = demo_devices(devices)
    end_ms = datetime.now(UTC).replace(minute=0, second=0, microsecond=0).timestamp() * 1000
    first_ms = int(end_ms) - days * 24 * CHUNK_MS
    idle_blocks = {
        (d.profile.model, f): _hour_block(d, HEARTBEAT_S, rng, f)
        for d in fleet[: len(DEMO_MODELS)]
        for f in sorted(d.profile.reading_names | d.profile.flag_names)
    }
    busy = {
        f: [_hour_block(fleet[0], 1, rng, f) for _ in range(24)]
        for f in sorted(fleet[0].profile.reading_names | fleet[0].profile.flag_names)
    }
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.executescript(SCHEMA)
        db.execute("BEGIN")
        for d in fleet:
            for field in sorted(d.profile.reading_names | d.profile.flag_names):
                sid = db.execute("INSERT INTO series VALUES (NULL, ?, ?)", (d.id, field)).lastrowid
                rows = []
                for hour in range(days * 24):
                    start = first_ms + hour * CHUNK_MS
                    recent = days * 24 - hour
                    n, block = (
                        busy[field][24 - recent]
                        if d.id == "dev-0" and recent <= 24
                        else idle_blocks[(d.profile.model, field)]
                    )
                    rows.append((sid, start, n, chunks.shifted(block, start)))
                db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?)", rows)
        db.execute("COMMIT")


async def at_scale(workdir: Path, devices: int, days: int, repeat: int) -> dict[str, Any]:
    path = workdir / "scale.db"
    stage(f"building a store of {devices:,} devices × {days} days")
    await asyncio.to_thread(build_scale_file, path, devices, days)
    size, _ = used_bytes(path)
    store = SqliteTimeSeries(path)
    await store.open()
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    reads = []
    for _ in range(repeat):
        t = time.perf_counter()
        points = await store.history("dev-0", TREND_FIELD, end - timedelta(hours=24), end, 300)
        reads.append(time.perf_counter() - t)
    await store.close()
    if sum(p.count for p in points) != 24 * 3600:
        raise RuntimeError("the busy device's day did not read back whole")
    return {
        "devices": devices,
        "days": days,
        "file_bytes": size,
        "trend_24h_ms": percentiles_ms(reads),
    }


async def run(
    devices: int,
    hours: float,
    idle_devices: int,
    scale_devices: int,
    days: int,
    repeat: int,
    as_json: bool,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fw-bench-storage-") as tmp:
        workdir = Path(tmp)
        busy = await full_rate(workdir, devices, hours, repeat)
        quiet = await idle(workdir, idle_devices)
        scale = await at_scale(workdir, scale_devices, days, repeat)
    figures = {
        "benchmark": "storage",
        "versions": {"sqlite": sqlite3.sqlite_version, **versions()},
        "full_rate": busy,
        "idle": quiet,
        "scale": scale,
        "bytes_per_point": busy["bytes_per_point"],
        "old_bytes_per_point": busy["old_bytes_per_point"],
        "size_vs_old": round(busy["bytes_per_point"] / busy["old_bytes_per_point"], 4),
        "idle_bytes_per_device_day": quiet["bytes_per_device_day"],
        "write_vs_old": round(busy["write_points_per_s"] / busy["old_write_points_per_s"], 2),
        "trend_read_vs_old": round(busy["trend_read_ms"] / busy["old_trend_read_ms"], 2),
        "goal_bytes_per_point": GOAL_BYTES_PER_POINT,
        "goal_idle_bytes_per_device_day": GOAL_IDLE_BYTES_PER_DEVICE_DAY,
    }
    trend = scale["trend_24h_ms"]
    rows = [
        (
            "bytes per point",
            f"{busy['bytes_per_point']:.2f}",
            f"old layout {busy['old_bytes_per_point']:.1f} (goal ≤ {GOAL_BYTES_PER_POINT})",
        ),
        (
            "bytes per device-day, 1 s polls",
            f"{busy['bytes_per_device_day']:,}",
            f"old layout {busy['old_bytes_per_device_day']:,}",
        ),
        (
            f"bytes per idle device-day ({HEARTBEAT_S} s)",
            f"{quiet['bytes_per_device_day']:,}",
            f"old layout {quiet['old_bytes_per_device_day']:,} "
            f"(goal ≤ {GOAL_IDLE_BYTES_PER_DEVICE_DAY:,})",
        ),
        (
            "write points/s",
            f"{busy['write_points_per_s']:,}",
            f"old layout {busy['old_write_points_per_s']:,}",
        ),
        (
            f"trend read ({hours:g} h of 1 s)",
            f"{busy['trend_read_ms']:.2f} ms",
            f"old layout {busy['old_trend_read_ms']:.2f} ms",
        ),
        (
            f"24 h trend at {scale_devices:,} devices × {days} d",
            f"{trend['p50']:.2f} ms",
            f"p99 {trend['p99']:.2f} ms, file {scale['file_bytes'] / 1e6:,.0f} MB",
        ),
    ]
    report(
        "embedded time-series store: figure vs the row-per-reading layout", rows, figures, as_json
    )
    return figures
