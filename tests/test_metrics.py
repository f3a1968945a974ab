"""What an operator's Prometheus sees of a gateway polling real Modbus simulators.

The gateway's broker is unreachable here on purpose: polling goes on into the outbox, and the
metrics say so (messages waiting, none published, not connected).
"""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from firewatch.metrics import FirewatchCollector, registry_for
from firewatch.mqtt import BrokerAddress, free_port
from firewatch.profiles import load_profiles
from firewatch.settings import SITES_DIR
from firewatch.site import load_site
from firewatch.stack import endpoint_ports
from gateway.service import GatewayService
from simulators.fleet import SimulatorFleet

pytestmark = pytest.mark.timeout(60)


def scrape(collector: FirewatchCollector) -> dict[tuple[str, frozenset], float]:
    text = generate_latest(registry_for(collector)).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_garbled_frames_show_as_poll_errors_of_their_kind_while_readings_queue_up(tmp_path):
    profiles = load_profiles()
    site = load_site(SITES_DIR / "demo-county.yaml", profiles)
    fleet = SimulatorFleet(site, profiles, BrokerAddress("127.0.0.1", 1), tick_s=0.05, seed=1)
    await fleet.start()
    [gateway] = [g for g in site.gateways if g.id == "gw-dingqiao"]
    service = GatewayService(
        gateway,
        site,
        profiles,
        BrokerAddress("127.0.0.1", free_port()),
        tmp_path / "outbox.db",
        endpoint_ports(fleet),
    )
    await service.outbox.open()
    [poller] = service.pollers
    try:
        await fleet.trigger("dq-gas-1", "garbled")
        for _ in range(2):
            for device, profile in poller.devices:
                await poller.poll_once(device, profile)
        metrics = scrape(FirewatchCollector(gateways=[service]))
    finally:
        poller.client.close()
        await service.outbox.close()
        await fleet.stop()

    def labelled(name: str, **labels: str) -> dict[frozenset, float]:
        return {
            pairs: value
            for (metric, pairs), value in metrics.items()
            if metric == name and set(labels.items()) <= pairs
        }

    gas = {"gateway": "gw-dingqiao", "device": "dq-gas-1"}
    assert list(labelled("firewatch_gateway_polls_total", **gas).values()) == [2]
    [(kinds, errors)] = labelled("firewatch_gateway_poll_errors_total", **gas).items()
    assert errors == 2 and dict(kinds)["kind"] != ""
    assert labelled("firewatch_gateway_poll_errors_total", device="dq-efm-1") == {}
    # the monitor's readings and online event wait in the outbox for a broker that is away
    [waiting] = labelled("firewatch_gateway_outbox_depth", gateway="gw-dingqiao").values()
    assert waiting == service.outbox.size >= 3
    assert list(labelled("firewatch_gateway_published_total").values()) == [0]
    assert list(labelled("firewatch_gateway_broker_connected").values()) == [0]
    assert labelled("process_resident_memory_bytes")
