"""`firewatch bench ingest`: readings/s through the broker into each store, next to a direct write.

The baseline is influxdb-client writing the same points straight to the database in batches
of 5,000 (what any InfluxDB integration does, with ``Point`` objects built beforehand and not
timed).  A second direct figure writes pre-formatted line protocol, the ceiling of what the
database takes from one Python process.  Firewatch's figure is the whole consumer path:
reading batches queued on a real Mosquitto for ingest's persistent session, taken, validated,
written in batches and acknowledged, timed from ingest's start until the last one is stored.
Databases: VictoriaMetrics through the InfluxDB v2 write API, and the embedded SQLite store.
Each figure is the median of ``repeat`` runs.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from influxdb_client import Point
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from sqlalchemy.ext.asyncio import async_sessionmaker

from firewatch.bench.common import report, stage, versions
from firewatch.bench.servers import Mosquitto, VictoriaMetrics
from firewatch.contract import ReadingBatch, message_topic
from firewatch.dead_letters import DeadLetters
from firewatch.mqtt import BrokerAddress
from ingest.influx_store import MILLISECONDS, InfluxTimeSeries, batch_to_line, batch_to_point
from ingest.service import IngestService
from ingest.spool import Spool
from ingest.sqlite_store import SqliteTimeSeries
from ingest.store import TimeSeriesStore

CHUNK = 5000


def make_batches(count: int, devices: int = 1000) -> list[ReadingBatch]:
    """Electrical-fire-monitor polls: five readings and three status flags each."""
    t0 = datetime.now(UTC) - timedelta(hours=1)
    return [
        ReadingBatch(
            gateway_id="gw-bench",
            seq=i + 1,
            device_id=f"dev-{i % devices}",
            institution_id="bench",
            kind="electrical_fire_monitor",
            ts=t0 + timedelta(milliseconds=i),
            profile="generic-efm-4t",
            readings={
                "residual_current": 80.0 + i % 7,
                "cable_temp_1": 31.5,
                "cable_temp_2": 30.2,
                "cable_temp_3": 29.9,
                "cable_temp_4": 30.0,
            },
            flags={
                "device_residual_alarm": False,
                "device_temperature_alarm": False,
                "sensor_fault": False,
            },
        )
        for i in range(count)
    ]


def values_in(batches: list[ReadingBatch]) -> int:
    return sum(len(b.readings) + len(b.flags) for b in batches)


async def direct_write(url: str, records: list[Point] | list[str]) -> float:
    """influxdb-client alone: the seconds to write every record in chunks of 5,000."""
    async with InfluxDBClientAsync(url=url, token="", org="bench") as client:
        write = client.write_api()
        start = time.perf_counter()
        for i in range(0, len(records), CHUNK):
            await write.write(
                bucket="direct", record=records[i : i + CHUNK], write_precision=MILLISECONDS
            )
        return time.perf_counter() - start


async def through_ingest(
    broker: BrokerAddress,
    store: TimeSeriesStore,
    workdir: Path,
    batches: list[ReadingBatch],
    name: str,
) -> float:
    """Queue the batches on the broker for ingest's session, then time ingest taking them."""

    def service() -> IngestService:
        return IngestService(store, Spool(workdir / f"spool-{name}.db"), broker, _NoDeadLetters())

    first = service()  # create ingest's persistent session, so the broker queues for it
    task = asyncio.create_task(first.run())
    await first.consumer.ready.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    async with broker.client("bench-gateway", max_inflight_messages=1000) as client:
        for i in range(0, len(batches), 1000):
            await asyncio.gather(
                *(
                    client.publish(message_topic(b), b.to_bytes(), qos=1)
                    for b in batches[i : i + 1000]
                )
            )

    await store.open()
    ingest = service()
    start = time.perf_counter()
    task = asyncio.create_task(ingest.run())
    while ingest.written + ingest.duplicates < len(batches):
        await asyncio.sleep(0.01)
    took = time.perf_counter() - start
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await store.close()
    # End the persistent session: while it exists the broker queues every message for it,
    # and the next store's run would find this run's batches before its own.
    async with broker.client(ingest.consumer.client_id, persistent=False):
        pass
    return took


class _NoDeadLetters(DeadLetters):
    """A benchmark's payloads are all valid: one set aside means the benchmark is broken.
    Nothing is stored, so its sessions are never opened."""

    def __init__(self) -> None:
        super().__init__(async_sessionmaker(), "ingest")

    async def put(
        self, topic: str, payload: bytes, reason: str, reason_class: str = "contract"
    ) -> None:
        raise RuntimeError(f"benchmark payload dead-lettered: {reason}")

    async def expire(self, every_s: float = 3600, chunk: int = 500) -> None:
        """A benchmark keeps no letters to forget."""


async def run(messages: int, repeat: int, as_json: bool) -> dict[str, Any]:
    batches = make_batches(messages)
    values = values_in(batches)
    points = [batch_to_point(b) for b in batches]
    lines = [batch_to_line(b) for b in batches]
    runs: dict[str, list[float]] = {"direct": [], "lines": [], "influx": [], "sqlite": []}
    with tempfile.TemporaryDirectory(prefix="fw-bench-") as tmp:
        workdir = Path(tmp)
        mosquitto = Mosquitto(workdir)
        victoria = VictoriaMetrics(workdir)
        stage("starting Mosquitto and VictoriaMetrics")
        mosquitto.start()
        victoria.start()
        try:
            broker = BrokerAddress.from_url(mosquitto.url)
            for r in range(repeat):
                stage(
                    f"run {r + 1}/{repeat}: {messages:,} batches direct, then through ingest "
                    "to InfluxDB and to SQLite"
                )
                runs["direct"].append(await direct_write(victoria.url, points))
                runs["lines"].append(await direct_write(victoria.url, lines))
                runs["influx"].append(
                    await through_ingest(
                        broker,
                        InfluxTimeSeries(victoria.url, "", "bench", "ingest"),
                        workdir,
                        batches,
                        "influx",
                    )
                )
                runs["sqlite"].append(
                    await through_ingest(
                        broker, SqliteTimeSeries(workdir / f"ts-{r}.db"), workdir, batches, "sqlite"
                    )
                )
        finally:
            victoria.stop()
            mosquitto.stop()
    direct, lines_rate, influx, sqlite = (
        values / statistics.median(runs[k]) for k in ("direct", "lines", "influx", "sqlite")
    )
    figures = {
        "benchmark": "ingest",
        "messages": messages,
        "readings": values,
        "readings_per_message": values / messages,
        "repeat": repeat,
        "direct_influxdb_client_readings_per_s": round(direct),
        "direct_line_protocol_readings_per_s": round(lines_rate),
        "ingest_influx_readings_per_s": round(influx),
        "ingest_influx_vs_direct": round(influx / direct, 3),
        "ingest_sqlite_readings_per_s": round(sqlite),
        "ingest_sqlite_vs_direct": round(sqlite / direct, 3),
        "database": "VictoriaMetrics (InfluxDB v2 write API)",
        "broker": "Mosquitto",
        "versions": versions("influxdb-client", "aiomqtt", "paho-mqtt"),
    }
    report(
        f"ingest: {messages:,} reading batches ({values:,} readings) through Mosquitto, "
        f"median of {repeat}",
        [
            ("influxdb-client direct", f"{direct:,.0f} readings/s", "baseline"),
            (
                "  same, as line protocol",
                f"{lines_rate:,.0f} readings/s",
                f"{lines_rate / direct:.2f} x baseline (ceiling)",
            ),
            (
                "ingest -> InfluxDB API",
                f"{influx:,.0f} readings/s",
                f"{influx / direct:.2f} x baseline (goal >= 0.5; >= 50,000/s)",
            ),
            ("ingest -> SQLite", f"{sqlite:,.0f} readings/s", f"{sqlite / direct:.2f} x baseline"),
        ],
        figures,
        as_json,
    )
    return figures
