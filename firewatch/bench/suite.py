"""`firewatch bench`: every benchmark in turn, then one table of figures against their baselines.

Each benchmark prints its own table as it finishes; the summary puts the headline figure of
each next to the baseline measured in the same run, because on a shared machine only ratios
taken together mean something.  Sizes default to a run of a few minutes; flags scale them.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

from firewatch.bench import alarms, gateway, ingest, map_load


@dataclass(frozen=True)
class Sizes:
    gateway_devices: int = 1000
    ingest_messages: int = 10_000
    alarm_devices: int = 1000
    map_devices: int = 2000
    seconds: float = 5
    repeat: int = 3

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Sizes:
        return cls(
            args.gateway_devices,
            args.ingest_messages,
            args.alarm_devices,
            args.map_devices,
            args.seconds,
            args.repeat,
        )


def _ms(figures: dict[str, Any]) -> str:
    return f"p50 {figures['p50']:,.0f} / p99 {figures['p99']:,.0f} ms" if figures["count"] else "-"


def summary_rows(results: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(what, figure, baseline, ratio) for each benchmark's headline."""
    g, i, a, m = (results[k] for k in ("gateway", "ingest", "alarms", "map"))
    return [
        (
            "gateway polls/s",
            f"{g['gateway_polls_per_s']:,.0f}",
            f"{g['bare_pymodbus_reads_per_s']:,.0f} bare pymodbus",
            f"{g['gateway_vs_bare']:.2f}",
        ),
        (
            "ingest -> InfluxDB API readings/s",
            f"{i['ingest_influx_readings_per_s']:,}",
            f"{i['direct_influxdb_client_readings_per_s']:,} influxdb-client",
            f"{i['ingest_influx_vs_direct']:.2f}",
        ),
        (
            "ingest -> SQLite readings/s",
            f"{i['ingest_sqlite_readings_per_s']:,}",
            f"{i['direct_influxdb_client_readings_per_s']:,} influxdb-client",
            f"{i['ingest_sqlite_vs_direct']:.2f}",
        ),
        (
            "one-key press -> notice",
            _ms(a["one_key_ms"]),
            f"{_ms(a['mqtt_round_trip_ms'])} MQTT",
            f"{a['one_key_p50_vs_mqtt_round_trip']} (p50)",
        ),
        (
            "gas breach -> notice",
            _ms(a["polled_ms"]),
            f"{_ms(a['mqtt_round_trip_ms'])} MQTT",
            f"{a['polled_p50_vs_mqtt_round_trip']} (p50)",
        ),
        (
            "/api/devices req/s",
            f"{m['devices_requests']['per_s']:,.1f}",
            f"{m['baseline_devices_requests']['per_s']:,.1f} bare uvicorn",
            f"{m['devices_vs_baseline']:.3f}",
        ),
        (
            "map snapshot /s",
            f"{m['snapshots']['per_s']:,.1f}",
            f"{m['baseline_snapshots']['per_s']:,.1f} bare uvicorn",
            f"{m['snapshot_vs_baseline']:.3f}",
        ),
    ]


async def run(sizes: Sizes, as_json: bool) -> dict[str, Any]:
    results = {
        "gateway": await gateway.run(sizes.gateway_devices, 50, sizes.seconds, False),
        "ingest": await ingest.run(sizes.ingest_messages, sizes.repeat, False),
        "alarms": await alarms.run(sizes.alarm_devices, None, 0.25, "mosquitto", "services", False),
        "map": await map_load.run(sizes.map_devices, sizes.seconds, 4, sizes.repeat, False),
    }
    table = [("what", "figure", "baseline", "ratio"), *summary_rows(results)]
    widths = [max(len(row[c]) for row in table) for c in range(4)]
    print("\nsummary: figures against baselines measured in this run (ratio: figure / baseline)")
    for row in table:
        print("  " + "  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths, strict=True)))
    figures = {"benchmark": "all", **results}
    if as_json:
        print(json.dumps(figures, ensure_ascii=False))
    return figures
