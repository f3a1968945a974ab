"""`firewatch bench gateway`: polls/s of the gateway next to a bare pymodbus read loop.

Both read the same simulated devices (a separate process, several unit ids per endpoint as on
an RS-485 line) for the same time, with the same concurrency: one request in flight per
endpoint, as a bus master has.  The bare loop reads each device's register block and nothing
else; the gateway does what it does in the field: merged reads, decoding by profile, link
statistics, and a durable outbox write of every batch.  The runs alternate (bare, gateway,
bare, ...) so that a change in the machine's load hits both alike; medians are reported, and
each run's figure is in the JSON.  The simulators share the machine's cores with the client,
so every microsecond of the client's CPU per poll is also taken from the simulators: on a
2-core machine the ratio is a ratio of CPU per poll as much as of latency.  A second run polls
every device at a 1 s interval and reports whether the gateway keeps up, and how much of a
core it uses.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from pymodbus.client import AsyncModbusTcpClient

from firewatch.bench.common import report, simulator_process, stage, synthetic_site, versions
from firewatch.mqtt import BrokerAddress
from firewatch.profiles import load_profiles, read_blocks
from firewatch.site import load_site
from gateway.service import GatewayService

PROFILE = "generic-efm-4t"
#: the part of a paced run before its messages are counted: the first poll of each device and
#: the every-poll settling after it (the longest rule delay, 10 s) are not what idle costs
SETTLING = 0.2


async def bare_loop(
    ports: dict[str, int], units: dict[str, list[int]], count: int, seconds: float
) -> int:
    """The baseline: one client per endpoint reading each unit's block in turn."""
    reads = 0

    async def endpoint_loop(endpoint_id: str) -> None:
        nonlocal reads
        client = AsyncModbusTcpClient("127.0.0.1", port=ports[endpoint_id], timeout=2, retries=0)
        await client.connect()
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                for unit in units[endpoint_id]:
                    reply = await client.read_holding_registers(0, count=count, device_id=unit)
                    assert not reply.isError()
                    reads += 1
        finally:
            client.close()

    await asyncio.gather(*(endpoint_loop(e) for e in ports))
    return reads


async def gateway_run(
    site,
    profiles,
    ports: dict[str, int],
    workdir: Path,
    interval_s: float,
    seconds: float,
    every_poll: bool = False,
) -> tuple[int, float, int]:
    """The real gateway's pollers and outbox for ``seconds``; (polls answered, CPU seconds,
    messages stored for publishing in the run's last part, after SETTLING).  ``every_poll``:
    report every poll, as before report by exception (each device's site switch off)."""
    tuned = {m: p.model_copy(update={"poll_interval_s": interval_s}) for m, p in profiles.items()}
    if every_poll:
        devices = [d.model_copy(update={"report_by_exception": False}) for d in site.devices]
        site = site.model_copy(update={"devices": devices})
    gateway = GatewayService(
        site.gateways[0],
        site,
        tuned,
        BrokerAddress("127.0.0.1", 1),
        workdir / f"outbox-{interval_s}-{every_poll}.db",
        lambda e: ports[e.id],
    )
    await gateway.outbox.open()
    cpu = time.process_time()
    tasks = [asyncio.create_task(p.run()) for p in gateway.pollers]
    await asyncio.sleep(seconds * SETTLING)
    settled = gateway.outbox.last_seq
    await asyncio.sleep(seconds * (1 - SETTLING))
    batches = gateway.outbox.last_seq - settled
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    cpu = time.process_time() - cpu
    await gateway.outbox.close()
    answered = sum(s.answered for p in gateway.pollers for s in p.stats.values())
    return answered, cpu, batches


async def run(
    devices: int, per_endpoint: int, seconds: float, as_json: bool, repeat: int = 3
) -> dict[str, Any]:
    profiles = load_profiles()
    with tempfile.TemporaryDirectory(prefix="fw-bench-") as tmp:
        workdir = Path(tmp)
        site_file = workdir / "site.yaml"
        synthetic_site(site_file, devices, per_endpoint, PROFILE)
        site = load_site(site_file, profiles)
        [(_, _, count, _)] = read_blocks(profiles[PROFILE].registers)
        units: dict[str, list[int]] = {}
        for d in site.devices:
            assert d.endpoint is not None and d.unit_id is not None  # Modbus devices, all
            units.setdefault(d.endpoint, []).append(d.unit_id)
        bare_runs, flat_runs = [], []
        stage(f"starting {devices} simulated Modbus devices")
        with simulator_process(site_file, workdir) as ports:
            for r in range(repeat):  # interleaved, so a change in load hits both alike
                stage(
                    f"run {r + 1}/{repeat}: measuring a bare pymodbus loop, then the gateway, "
                    f"{seconds:g} s each"
                )
                bare_runs.append(await bare_loop(ports, units, count, seconds) / seconds)
                flat_out, _, _ = await gateway_run(site, profiles, ports, workdir, 1e-6, seconds)
                flat_runs.append(flat_out / seconds)
            stage(f"measuring the gateway at a 1 s interval, {seconds:g} s, every poll reported")
            full_paced, full_cpu, full = await gateway_run(
                site, profiles, ports, workdir, 1.0, seconds, every_poll=True
            )
            stage(f"measuring the gateway at a 1 s interval, {seconds:g} s, by exception")
            paced, cpu, sparse = await gateway_run(site, profiles, ports, workdir, 1.0, seconds)
    bare, flat_rate = statistics.median(bare_runs), statistics.median(flat_runs)
    paced_rate = paced / seconds
    # idle devices (the simulators' normal values): reading batches a device a second, once
    # settled (no online events then: every device answers all along)
    counted_s = seconds * (1 - SETTLING)
    full_rate, sparse_rate = full / devices / counted_s, sparse / devices / counted_s
    figures = {
        "benchmark": "gateway",
        "devices": devices,
        "endpoints": len(units),
        "registers_per_read": count,
        "seconds": seconds,
        "repeat": repeat,
        "bare_pymodbus_reads_per_s": round(bare, 1),
        "gateway_polls_per_s": round(flat_rate, 1),
        "gateway_vs_bare": round(flat_rate / bare, 3),
        "bare_runs_per_s": [round(r, 1) for r in bare_runs],
        "gateway_runs_per_s": [round(r, 1) for r in flat_runs],
        "paced_1s_polls_per_s": round(paced_rate, 1),
        "paced_1s_target_per_s": devices,
        "paced_1s_keeps_up": round(paced_rate / devices, 3),
        "paced_1s_cpu_cores": round(cpu / seconds, 3),
        # polls answered a CPU second: the devices one core polls at a 1 s interval
        "paced_1s_devices_per_core": round(paced / cpu) if cpu else None,
        "every_poll_cpu_cores": round(full_cpu / seconds, 3),
        "every_poll_devices_per_core": round(full_paced / full_cpu) if full_cpu else None,
        "every_poll_batches_per_device_s": round(full_rate, 4),
        "idle_batches_per_device_s": round(sparse_rate, 4),
        "idle_batches_vs_every_poll": round(sparse_rate / full_rate, 4) if full else None,
        "versions": versions("pymodbus"),
    }
    report(
        f"gateway: {devices} devices on {len(units)} Modbus TCP endpoints, {seconds:g} s each "
        f"run, median of {repeat}",
        [
            ("bare pymodbus loop", f"{bare:,.0f} reads/s", "baseline"),
            (
                "gateway, flat out",
                f"{flat_rate:,.0f} polls/s",
                f"{flat_rate / bare:.2f} x baseline (goal >= 0.8)",
            ),
            (
                "gateway, 1 s interval",
                f"{paced_rate:,.0f} polls/s",
                f"{paced_rate / devices:.2f} of {devices}/s target, "
                f"{cpu / seconds:.2f} of one core",
            ),
            (
                "batches a device a second, idle",
                f"{sparse_rate:.3f} by exception",
                f"{full_rate:.3f} reporting every poll "
                f"({full_cpu / seconds:.2f} of one core); after the first {SETTLING:.0%}",
            ),
        ],
        figures,
        as_json,
    )
    return figures
