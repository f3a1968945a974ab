"""`firewatch simulate serve`: a site's simulated devices in a process of their own.

For testers and benchmarks that want the devices apart from the gateway, as in the field.
Writes ``{"endpoints": {endpoint id: port}}`` to ``ready_file`` once every server listens, and
serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

from firewatch.mqtt import BrokerAddress
from firewatch.profiles import load_profiles
from firewatch.settings import Settings
from firewatch.site import load_site
from simulators.fleet import SimulatorFleet


async def serve(site_file: Path, ready_file: Path | None, mqtt_url: str | None) -> None:
    settings = Settings()
    profiles = load_profiles(settings.profiles_dir)
    site = load_site(site_file, profiles)
    broker = BrokerAddress.from_url(mqtt_url) if mqtt_url else BrokerAddress("127.0.0.1", 1883)
    fleet = SimulatorFleet(site, profiles, broker)
    await fleet.start()
    if mqtt_url:
        fleet.start_mqtt()
    ports = {endpoint_id: fleet.endpoint_port(endpoint_id) for endpoint_id in fleet.endpoints}
    if ready_file is not None:
        ready_file.write_text(json.dumps({"endpoints": ports}))
    print(f"simulating {len(fleet.devices)} devices on {len(ports)} Modbus endpoints", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await fleet.stop()
