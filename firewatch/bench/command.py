"""`firewatch bench`: its command line, and running the benchmark it names.

Each benchmark's module is imported only when it runs, so the rest of the command line stays
quick to start.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any


def add_parser(sub: Any) -> None:
    """`bench` and its benchmarks, on the subcommands ``sub`` of the `firewatch` parser."""
    bench = sub.add_parser("bench", help="measure against baselines taken in the same run")
    bench.add_argument("--json", action="store_true", help="end with one JSON line of figures")
    bench.add_argument("--gateway-devices", type=int, default=1000)
    bench.add_argument("--ingest-messages", type=int, default=10_000)
    bench.add_argument("--alarm-devices", type=int, default=1000)
    bench.add_argument("--map-devices", type=int, default=2000)
    bench.add_argument("--seconds", type=float, default=5, help="length of each timed run")
    bench.add_argument("--repeat", type=int, default=3, help="runs of each; medians are reported")
    bench.set_defaults(func=run, benchmark=None)
    bench_sub = bench.add_subparsers(
        dest="benchmark", help="one benchmark (none: all four and a summary table)"
    )
    gw = bench_sub.add_parser("gateway", help="gateway polls/s vs a bare pymodbus loop")
    gw.add_argument("--devices", type=int, default=1000)
    gw.add_argument("--per-endpoint", type=int, default=50, help="unit ids per endpoint")
    gw.add_argument("--seconds", type=float, default=5, help="length of each timed run")
    gw.add_argument("--repeat", type=int, default=3, help="runs of each; medians are reported")
    ing = bench_sub.add_parser("ingest", help="ingest readings/s vs influxdb-client direct")
    ing.add_argument("--messages", type=int, default=20_000, help="reading batches to send")
    ing.add_argument("--repeat", type=int, default=3, help="runs of each; medians are reported")
    alarm = bench_sub.add_parser("alarms", help="event-to-notice latency vs an MQTT round trip")
    alarm.add_argument("--devices", type=int, default=1000, help="ten per institution")
    alarm.add_argument("--count", type=int, help="presses and breaches each (default: max)")
    alarm.add_argument("--spacing", type=float, default=0.25, help="seconds between triggers")
    alarm.add_argument("--broker", choices=["mosquitto", "embedded"], default="mosquitto")
    alarm.add_argument(
        "--shape",
        choices=["services", "up"],
        default="services",
        help="services: each in a process of its own, as in production; "
        "up: everything in one `firewatch up` process",
    )
    alarm.add_argument(
        "--hostile-rate",
        type=float,
        default=0.0,
        metavar="N",
        help="beside the load, N hostile messages a second (forged devices, far "
        "times, huge numbers, broken JSON): alarms must get past them",
    )
    mp = bench_sub.add_parser("map", help="map data requests/s vs bare uvicorn, same JSON size")
    mp.add_argument("--devices", type=int, default=2000, help="one-key buttons, four each")
    mp.add_argument("--seconds", type=float, default=5, help="length of each timed run")
    mp.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    mp.add_argument("--repeat", type=int, default=3, help="runs of each; medians are reported")
    store = bench_sub.add_parser(
        "storage", help="embedded time-series bytes/point, writes, trend reads vs the old layout"
    )
    store.add_argument("--devices", type=int, default=9, help="polled every second (the demo's)")
    store.add_argument("--hours", type=float, default=3, help="of 1 s polls written")
    store.add_argument("--idle-devices", type=int, default=30, help="a heartbeat a minute, a day")
    store.add_argument("--scale-devices", type=int, default=1000, help="in the trend-read file")
    store.add_argument("--days", type=int, default=7, help="of the trend-read file")
    store.add_argument("--repeat", type=int, default=20, help="trend reads; medians reported")
    cap = bench_sub.add_parser(
        "capacity", help="most devices the central side carries, one-key p99 < 300 ms"
    )
    cap.add_argument(
        "--devices",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1000, 2500, 5000, 10_000, 15_000],
        help="device counts to step through, comma-separated (ten per gateway); it stops "
        "once one backs up or has one-key p99 past 900 ms",
    )
    cap.add_argument("--seconds", type=float, default=30, help="measured at each step")
    cap.add_argument(
        "--alerts-replicas", type=int, default=1, help="alert replicas sharing the partitions"
    )
    cap.add_argument(
        "--warm-up",
        type=float,
        default=60,
        help="seconds published before each step is measured (60: every idle device has "
        "reported once)",
    )
    for b in (alarm, cap):
        b.add_argument(
            "--database",
            choices=["sqlite", "postgresql"],
            default="sqlite",
            help="the relational store: SQLite in the data dir, or a PostgreSQL cluster "
            "started for the run (Debian's package); the time series stay in SQLite",
        )
    for b in (gw, ing, alarm, mp, store, cap):
        b.add_argument("--json", action="store_true", help="end with one JSON line of figures")
        b.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark ``args`` name (none: the suite); its modules load only then."""
    if args.benchmark == "gateway":
        from firewatch.bench import gateway

        asyncio.run(
            gateway.run(args.devices, args.per_endpoint, args.seconds, args.json, args.repeat)
        )
    elif args.benchmark == "ingest":
        from firewatch.bench import ingest

        asyncio.run(ingest.run(args.messages, args.repeat, args.json))
    elif args.benchmark == "alarms":
        from firewatch.bench import alarms

        asyncio.run(
            alarms.run(
                args.devices,
                args.count,
                args.spacing,
                args.broker,
                args.shape,
                args.json,
                args.database,
                args.hostile_rate,
            )
        )
    elif args.benchmark == "storage":
        from firewatch.bench import storage

        asyncio.run(
            storage.run(
                args.devices,
                args.hours,
                args.idle_devices,
                args.scale_devices,
                args.days,
                args.repeat,
                args.json,
            )
        )
    elif args.benchmark == "capacity":
        from firewatch.bench import capacity

        asyncio.run(
            capacity.run(
                args.devices,
                args.seconds,
                args.alerts_replicas,
                args.json,
                args.database,
                args.warm_up,
            )
        )
    elif args.benchmark == "map":
        from firewatch.bench import map_load

        asyncio.run(
            map_load.run(args.devices, args.seconds, args.concurrency, args.repeat, args.json)
        )
    else:
        from firewatch.bench import suite

        asyncio.run(suite.run(suite.Sizes.from_args(args), args.json))
    return 0
