"""`firewatch bench map`: how fast the stack serves the live map's data, next to bare uvicorn.

A synthetic county of one-key alarm buttons (four per institution, as in the console's
2,000-device test) runs in `firewatch up` (a child process, embedded broker); every button has
reported once, so each device carries its state and last readings.  Two loads, each with
``concurrency`` requests in flight for ``seconds``:

* ``/api/devices``: the document the map's markers and counts are drawn from;
* the page's snapshot: what ``map.js`` loads on opening (map config, then outline,
  institutions, devices, open alarms and open ledger entries together), timed as one.

The baseline serves the very same response bytes from a bare FastAPI app on uvicorn in a
process of its own (``firewatch.bench.json_server``), so the ratio is the cost of the database,
the access rules and the serialization.  Figures are medians of ``repeat`` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from firewatch.bench.common import percentiles_ms, report, stage, versions
from firewatch.bench.stack_process import running_stack, wait_until_normal
from firewatch.mqtt import BrokerAddress, free_port
from firewatch.profiles import load_profiles
from firewatch.settings import SITES_DIR
from firewatch.site import load_site
from simulators.fleet import SimulatorFleet

BUTTONS_EACH, GATEWAYS = 4, 10
CONFIG = ("config", "/api/map/config")
TOGETHER = [  # what map.js fetches at once, after the config
    ("outline", "/api/map/outline"),
    ("institutions", "/api/institutions"),
    ("devices", "/api/devices"),
    ("alarms", "/api/alarms?status=active&status=acknowledged&limit=100"),
    (
        "hazards",
        (
            "/api/hazards?status=pending-verification&status=reported&status=rectifying"
            "&status=awaiting-verification&limit=100"
        ),
    ),
]


def county(devices: int, directory: Path) -> Path:
    """Buttons in institutions spread over the demo county's outline, on ten gateways."""
    shutil.copy(SITES_DIR / "demo-county.geojson", directory / "county.geojson")
    institutions = max(1, devices // BUTTONS_EACH)
    gateways = min(GATEWAYS, institutions)
    site = {
        "county": {
            "name": f"基准测试县（{institutions * BUTTONS_EACH}台设备）",
            "outline": "county.geojson",
        },
        "institutions": [
            {
                "id": f"inst-{n:04d}",
                "name": f"基准机构{n:04d}",
                "type": "elderly_care",
                "township": f"基准镇{n % 10}",
                "location": {
                    "lat": 30.40 + 0.40 * (n // 25 % 20) / 20,
                    "lon": 117.72 + 0.32 * (n % 25) / 25,
                },
                "head": {"name": "负责人", "phone": "13800000001"},
                "safety_officer": {"name": "安全员", "phone": "13800000002"},
            }
            for n in range(institutions)
        ],
        "gateways": [{"id": f"gw-{g}", "institution": f"inst-{g:04d}"} for g in range(gateways)],
        "devices": [
            {
                "id": f"btn-{n:04d}-{b}",
                "institution": f"inst-{n:04d}",
                "gateway": f"gw-{n % gateways}",
                "profile": "generic-onekey-mqtt",
                "location": f"{b + 1}号楼",
                "simulated": True,
            }
            for n in range(institutions)
            for b in range(BUTTONS_EACH)
        ],
    }
    path = directory / "site.yaml"
    path.write_text(yaml.safe_dump(site, allow_unicode=True), encoding="utf-8")
    return path


async def load(
    client: httpx.AsyncClient,
    paths: dict[str, str],
    snapshot: bool,
    seconds: float,
    concurrency: int,
) -> list[float]:
    """Request for ``seconds`` with ``concurrency`` in flight; the seconds each one took."""
    took: list[float] = []
    end = time.perf_counter() + seconds

    async def get(name: str) -> None:
        (await client.get(paths[name])).raise_for_status()

    async def worker() -> None:
        while (start := time.perf_counter()) < end:
            if snapshot:
                await get(CONFIG[0])
                await asyncio.gather(*(get(name) for name, _ in TOGETHER))
            else:
                await get("devices")
            took.append(time.perf_counter() - start)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return took


@contextlib.contextmanager
def baseline_server(directory: Path) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "firewatch.bench.json_server", str(directory), str(port)]
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"http://127.0.0.1:{port}/devices", timeout=1).raise_for_status()
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the baseline JSON server did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(30)


async def run(
    devices: int, seconds: float, concurrency: int, repeat: int, as_json: bool
) -> dict[str, Any]:
    profiles = load_profiles()
    runs: dict[str, list[list[float]]] = {
        k: [] for k in ("stack", "base", "stack_snap", "base_snap")
    }
    with tempfile.TemporaryDirectory(prefix="fw-bench-") as tmp:
        workdir = Path(tmp)
        site_file = county(devices, workdir)
        broker = BrokerAddress("127.0.0.1", free_port())
        env = {"FIREWATCH_MQTT_EMBEDDED_PORT": str(broker.port)}
        stage(f"starting `firewatch up` with {devices} devices")
        with running_stack(site_file, workdir, env) as api:
            site = load_site(site_file, profiles)
            device_count = len(site.devices)
            fleet = SimulatorFleet(site, profiles, broker, seed=1)
            await fleet.start()
            fleet.start_mqtt()  # every button reports once, at once
            try:
                await wait_until_normal(api, ("",), 300)  # 2,000 first reports, busy machine
            finally:
                await fleet.stop()
            documents = workdir / "documents"
            documents.mkdir()
            for name, path in [CONFIG, *TOGETHER]:
                reply = api.get(path)
                reply.raise_for_status()
                (documents / f"{name}.json").write_bytes(reply.content)
            sizes = {f.stem: f.stat().st_size for f in documents.glob("*.json")}
            stack_paths = dict([CONFIG, *TOGETHER])
            base_paths = {name: f"/{name}" for name in stack_paths}
            limits = httpx.Limits(max_connections=concurrency * len(stack_paths))
            with baseline_server(documents) as base_url:
                async with (
                    httpx.AsyncClient(
                        base_url=str(api.base_url), headers=api.headers, limits=limits, timeout=60
                    ) as stack,
                    httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as base,
                ):
                    stage(
                        f"measuring the stack and bare uvicorn, {seconds:g} s each, {repeat} times"
                    )
                    for _ in range(repeat):  # interleaved, so both see the same machine
                        runs["stack"].append(
                            await load(stack, stack_paths, False, seconds, concurrency)
                        )
                        runs["base"].append(
                            await load(base, base_paths, False, seconds, concurrency)
                        )
                        runs["stack_snap"].append(
                            await load(stack, stack_paths, True, seconds, concurrency)
                        )
                        runs["base_snap"].append(
                            await load(base, base_paths, True, seconds, concurrency)
                        )

    def median_of(key: str) -> dict[str, float]:
        """Per-run rate and percentiles, each the median over the runs."""
        per_run = [{"per_s": len(t) / seconds, **percentiles_ms(t)} for t in runs[key]]
        return {
            k: round(statistics.median(r[k] for r in per_run), 1) for k in ("per_s", "p50", "p99")
        }

    stack_dev, base_dev = median_of("stack"), median_of("base")
    stack_snap, base_snap = median_of("stack_snap"), median_of("base_snap")
    figures = {
        "benchmark": "map",
        "devices": device_count,
        "institutions": device_count // BUTTONS_EACH,
        "concurrency": concurrency,
        "seconds": seconds,
        "repeat": repeat,
        "response_bytes": sizes,
        "devices_requests": stack_dev,
        "baseline_devices_requests": base_dev,
        "devices_vs_baseline": round(stack_dev["per_s"] / base_dev["per_s"], 3),
        "snapshots": stack_snap,
        "baseline_snapshots": base_snap,
        "snapshot_vs_baseline": round(stack_snap["per_s"] / base_snap["per_s"], 3),
        "versions": versions("fastapi", "uvicorn", "sqlalchemy", "httpx"),
    }

    def row(name: str, f: dict[str, float], unit: str, note: str) -> tuple[str, str, str]:
        return (
            name,
            f"{f['per_s']:,.1f} {unit}/s",
            f"p50 {f['p50']:,.0f}  p99 {f['p99']:,.0f} ms; {note}",
        )

    report(
        f"map: {figures['devices']} devices ({sizes['devices']:,} bytes of /api/devices), "
        f"{concurrency} in flight, {seconds:g} s runs, median of {repeat}",
        [
            row("bare uvicorn, same bytes", base_dev, "req", "baseline"),
            row(
                "/api/devices", stack_dev, "req", f"{figures['devices_vs_baseline']:.3f} x baseline"
            ),
            row("bare uvicorn, snapshot", base_snap, "snap", "baseline (6 documents)"),
            row(
                "map snapshot (6 requests)",
                stack_snap,
                "snap",
                f"{figures['snapshot_vs_baseline']:.3f} x baseline",
            ),
        ],
        figures,
        as_json,
    )
    return figures
