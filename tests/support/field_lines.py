"""Field wiring for gateway tests: an RS-485 line made of two ptys, and a one-gateway site.

:class:`NullModem` runs ``socat`` (Debian package ``socat``) joining two pseudo-terminals, so
the gateway opens one end as it would open /dev/ttyUSB0 and the simulators answer RTU on the
other, through the kernel's tty layer and pyserial as on a real serial port.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from firewatch.settings import SITES_DIR
from firewatch.site import Device, ModbusEndpoint, Site, load_site
from tests.support.alerts import PROFILES

DEMO = load_site(SITES_DIR / "demo-county.yaml", PROFILES)


class NullModem:
    """Two ptys joined by socat: ``gateway_end`` and ``device_end`` (symlinks in ``directory``)."""

    def __init__(self, directory: Path) -> None:
        self.gateway_end = directory / "ttyGATEWAY"
        self.device_end = directory / "ttyDEVICE"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [
                "socat",
                "-d",
                "-d",
                f"pty,raw,echo=0,link={self.gateway_end}",
                f"pty,raw,echo=0,link={self.device_end}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 5
        while not (self.gateway_end.exists() and self.device_end.exists()):
            if self._process.poll() is not None:
                raise RuntimeError(f"socat exited: {self._process.stderr.read().decode()}")
            if time.monotonic() > deadline:
                raise RuntimeError("socat made no pty pair within 5 s")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(5)
            self._process = None


def one_gateway_site(endpoint: ModbusEndpoint, devices: list[tuple[str, str, int]]) -> Site:
    """The demo's first institution with one gateway, one simulated ``endpoint`` and
    ``devices`` (id, profile, unit id) on it."""
    institution = DEMO.institutions[0]
    gateway = DEMO.gateways[0].model_copy(update={"endpoints": [endpoint]})
    return Site(
        county=DEMO.county,
        institutions=[institution],
        gateways=[gateway],
        devices=[
            Device(
                id=device_id,
                institution=institution.id,
                gateway=gateway.id,
                profile=profile,
                endpoint=endpoint.id,
                unit_id=unit_id,
                simulated=True,
            )
            for device_id, profile, unit_id in devices
        ],
    )
