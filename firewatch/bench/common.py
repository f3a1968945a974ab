"""What the benchmarks share: versions, simulator processes, and the report format."""

from __future__ import annotations

import contextlib
import json
import math
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml

from firewatch.logs import progress


def stage(what: str) -> None:
    """A line per stage of a long run (see :func:`firewatch.logs.progress`)."""
    progress(f"{what}…")


def versions(*packages: str) -> dict[str, str]:
    return {"python": platform.python_version(), **{p: version(p) for p in packages}}


def synthetic_site(path: Path, devices: int, per_endpoint: int, profile: str) -> dict[str, Any]:
    """A site with ``devices`` simulated Modbus devices, ``per_endpoint`` unit ids per line."""
    endpoints = (devices + per_endpoint - 1) // per_endpoint
    site = {
        "county": {"name": "bench"},
        "institutions": [
            {
                "id": "bench",
                "name": "基准测试",
                "type": "elderly_care",
                "township": "-",
                "location": {"lat": 30.6, "lon": 117.8},
                "head": {"name": "-", "phone": "00000"},
                "safety_officer": {"name": "-", "phone": "00000"},
            }
        ],
        "gateways": [
            {
                "id": "gw-bench",
                "institution": "bench",
                "endpoints": [
                    {"id": f"line-{e}", "port": 0, "simulated": True} for e in range(endpoints)
                ],
            }
        ],
        "devices": [
            {
                "id": f"dev-{i}",
                "institution": "bench",
                "gateway": "gw-bench",
                "profile": profile,
                "endpoint": f"line-{i // per_endpoint}",
                "unit_id": i % per_endpoint + 1,
                "simulated": True,
            }
            for i in range(devices)
        ],
    }
    path.write_text(yaml.safe_dump(site, allow_unicode=True), encoding="utf-8")
    return site


@contextlib.contextmanager
def simulator_process(site_file: Path, workdir: Path) -> Iterator[dict[str, int]]:
    """The site's devices served by `firewatch simulate serve` in a process of their own."""
    ready = workdir / "simulators-ready.json"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "firewatch.cli",
            "simulate",
            "serve",
            "--site",
            str(site_file),
            "--ready-file",
            str(ready),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the simulator process did not start")
            time.sleep(0.05)
        yield json.loads(ready.read_text())["endpoints"]
    finally:
        process.terminate()
        process.wait(30)


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    """p50, p95, p99 and max in milliseconds (nearest rank, so a figure is one that was seen)."""
    ranked = sorted(seconds)
    if not ranked:
        return {"count": 0}

    def rank(p: float) -> float:
        return round(ranked[max(0, math.ceil(p / 100 * len(ranked)) - 1)] * 1000, 1)

    return {
        "count": len(ranked),
        "p50": rank(50),
        "p95": rank(95),
        "p99": rank(99),
        "max": rank(100),
    }


def report(
    title: str, rows: list[tuple[str, str, str]], figures: dict[str, Any], as_json: bool
) -> None:
    width = max(len(r[0]) for r in rows)
    print(title)
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>14}  {note}")
    if as_json:
        print(json.dumps(figures, ensure_ascii=False))
