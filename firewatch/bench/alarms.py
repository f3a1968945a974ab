"""`firewatch bench alarms`: from a simulator event to the notice arriving at the robot endpoint.

A synthetic county (one institution per ten devices: four electrical fire monitors and four gas
detectors on one Modbus TCP line, two one-key alarm buttons on MQTT) runs as production runs it,
`firewatch alerts`, `ingest` and `gateway` in processes of their own on a real Mosquitto (or,
``--shape up``, in one `firewatch up` process), on SQLite or, ``--database postgresql``, on a
PostgreSQL of its own with the server's default durability.  The devices are simulated in this
process, as in the field they are apart from the gateway, so the benchmark knows the instant of
each event:

* a one-key press: when the simulated button's state changes (its uplink goes out at once);
* a polled breach (``gas-leak``): when the detector's registers first hold a concentration at
  or past the ``gas_high`` set point (the rule with no on-delay), as the gateway would decode it.

Each notice is timed when it arrives at :class:`WebhookRecorder`, each institution's robot.
The one-key alarm is fire-class (the site's dispatch policy): it goes out at once on the robot
and by SMS to the institution's duty mobile, and the recorder takes the SMS too
(``FIREWATCH_ALIYUN_SMS_ENDPOINT``).  So each press is also timed until its *second* means left
Firewatch, the later of the two requests: GB/T 45839-2025 asks for two means within 15 s.  What
the providers then take to ring a phone or deliver a text is outside Firewatch and not measured.
A gas leak is one alarm rising from its low limit (预警, on the robot alone) to its high limit
(报警): its time is that of the rise's notice (【升级】…高限报警), and only the presses are timed to
their second means.  Every measured alarm is in an institution of its own, and storm grouping is
off (``FIREWATCH_NOTICE_STORM_WINDOW_S=0``) so that no alarm is folded into another's summary.
The baseline, taken on the same broker under the same load just before, is a bare MQTT QoS 1
round trip: publish, a subscriber receives.

``--hostile-rate N`` adds a flood of N hostile messages a second (firewatch.bench.hostile) from
before the flow is measured to the end: the presses and breaches must get past it, and the
figures say how many of the flood the services refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import yaml

from alerts.service import CONSUMER as ALERTS
from firewatch.bench.common import percentiles_ms, report, stage, versions
from firewatch.bench.hostile import flood
from firewatch.bench.recorder import WebhookRecorder
from firewatch.bench.servers import Mosquitto, PostgreSQL
from firewatch.bench.stack_process import running_services, running_stack, scrape
from firewatch.contract import ReadingBatch, parse_message, readings_topic
from firewatch.mqtt import BrokerAddress, free_port
from firewatch.profiles import DeviceProfile, load_profiles
from firewatch.site import load_site
from simulators.fleet import SimulatorFleet

EFM, GAS, BUTTON = "generic-efm-4t", "generic-gas-lel", "generic-onekey-mqtt"
EFMS_EACH, GAS_EACH, BUTTONS_EACH = 4, 4, 2
DEVICES_EACH = EFMS_EACH + GAS_EACH + BUTTONS_EACH
GOAL_ONE_KEY_S = 0.3
#: GB/T 45839-2025 5.10.4: a fire alarm to the responsible people by two means within 15 s;
#: Firewatch's share must be well inside it, as the providers' delivery comes on top
GOAL_SECOND_MEANS_S = 15.0
#: the one-key alarm's two means
MEANS = ["robot", "sms"]
#: what the benchmark's SMS channel is configured with: the recorder takes any of it
SMS_ENV = {
    "FIREWATCH_ALIYUN_SMS_ACCESS_KEY_ID": "bench",
    "FIREWATCH_ALIYUN_SMS_ACCESS_KEY_SECRET": "bench",
    "FIREWATCH_ALIYUN_SMS_SIGN_NAME": "基准",
    "FIREWATCH_ALIYUN_SMS_TEMPLATE_CODE": "SMS_bench",
}
SHAPES = {
    "services": "alerts, ingest and gateways in processes of their own (production)",
    "up": "everything in one `firewatch up` process (laptop)",
}


def duty_mobile(n: int) -> str:
    """Institution ``n``'s duty mobile: one each, as the SMS limit is per number."""
    return f"139{n:08d}"


def county(institutions: int, recorder: WebhookRecorder) -> dict[str, Any]:
    """The synthetic site, every device simulated, each institution with a robot and a duty
    mobile of its own."""
    site: dict[str, Any] = {
        "county": {"name": "基准测试县"},
        "dispatch": {
            "at_once": [{"category": "fire_facilities", "severity": "alarm", "means": MEANS}]
        },
        "institutions": [],
        "gateways": [],
        "devices": [],
    }
    for n in range(institutions):
        inst = f"inst-{n:03d}"
        site["institutions"].append(
            {
                "id": inst,
                "name": f"基准机构{n:03d}",
                "type": "elderly_care",
                "township": "基准镇",
                "location": {"lat": 30.4 + n % 20 * 0.02, "lon": 117.7 + n // 20 * 0.02},
                "head": {"name": "负责人", "phone": "13800000001"},
                "safety_officer": {"name": "安全员", "phone": duty_mobile(n)},
                "wecom_webhook_url": recorder.webhook(inst),
            }
        )
        site["gateways"].append(
            {
                "id": f"gw-{n:03d}",
                "institution": inst,
                "endpoints": [{"id": f"line-{n:03d}", "port": 0, "simulated": True}],
            }
        )
        kinds = [("efm", EFM)] * EFMS_EACH + [("gas", GAS)] * GAS_EACH
        for unit, (kind, profile) in enumerate(kinds, start=1):
            site["devices"].append(
                {
                    "id": f"{kind}-{n:03d}-{unit}",
                    "institution": inst,
                    "gateway": f"gw-{n:03d}",
                    "profile": profile,
                    "endpoint": f"line-{n:03d}",
                    "unit_id": unit,
                    "location": f"{unit}号位",
                    "simulated": True,
                }
            )
        site["devices"] += [
            {
                "id": f"btn-{n:03d}-{b}",
                "institution": inst,
                "gateway": f"gw-{n:03d}",
                "profile": BUTTON,
                "location": f"{b + 1}号楼值班室",
                "simulated": True,
            }
            for b in range(BUTTONS_EACH)
        ]
    return site


@dataclass
class Measured:
    institution: str
    device_id: str
    title: str  # the alarm's title, as the notice carries it
    phone: str  # the institution's duty mobile: the SMS, the second means
    shows: Callable[[ReadingBatch], bool]  # whether a gateway message carries the event
    event_at: float | None = None  # time.perf_counter() of the simulator event
    on_broker_at: float | None = None  # when the gateway's message showing it left the broker


def decoded(profile: DeviceProfile, field: str, value: float) -> float:
    """``value`` as the gateway reads it back from the simulated register (rounded raw)."""
    reg = next(r for r in profile.registers if r.name == field)
    return reg.to_physical(round(reg.to_raw(value)))


async def watch_breaches(
    fleet: SimulatorFleet, breaches: list[Measured], field: str, set_point: float
) -> None:
    """Stamp each triggered detector's event when its register first holds the breach.

    Values move on the simulators' ticks (every 0.5 s); looking every 10 ms stamps a breach at
    most 10 ms late, which makes the measured latency that much shorter, at a fifth of the CPU
    a 2 ms look took from the simulated devices in this process."""
    while True:
        for m in breaches:
            unit = fleet.devices[m.device_id]
            if (
                m.event_at is None
                and unit.scenario == "gas-leak"
                and decoded(unit.profile, field, unit.readings[field]) >= set_point
            ):
                m.event_at = time.perf_counter()
        await asyncio.sleep(0.01)


async def watch_broker(
    broker: BrokerAddress, measured: list[Measured], subscribed: asyncio.Event
) -> None:
    """Stamp when the broker hands on each event's gateway message: the first message of the
    device, after the event, that carries it, as a subscriber of its own sees it.  This splits
    each latency into the way to the broker (device, gateway) and the rest (alert service,
    notifier)."""
    by_device = {m.device_id: m for m in measured}
    async with broker.client("bench-observer") as client:
        await client.subscribe([(readings_topic("+", d), 0) for d in by_device])
        subscribed.set()
        async for message in client.messages:
            batch = parse_message(message.topic.value, bytes(message.payload))
            if not isinstance(batch, ReadingBatch):
                continue
            m = by_device[batch.device_id]
            if m.event_at is not None and m.on_broker_at is None and m.shows(batch):
                m.on_broker_at = time.perf_counter()


async def mqtt_round_trips(broker: BrokerAddress, count: int) -> list[float]:
    """The baseline: QoS 1 publish to a subscriber on the same broker, ``count`` times."""
    topic = "bench/round-trip"
    sent: dict[bytes, float] = {}
    took: list[float] = []
    async with broker.client("bench-rtt-sub") as sub, broker.client("bench-rtt-pub") as pub:
        await sub.subscribe(topic, qos=1)

        async def receive() -> None:
            async for message in sub.messages:
                took.append(time.perf_counter() - sent[bytes(message.payload)])
                if len(took) == count:
                    return

        receiving = asyncio.create_task(receive())
        for i in range(count):
            payload = str(i).encode()
            sent[payload] = time.perf_counter()
            await pub.publish(topic, payload, qos=1)
            await asyncio.sleep(0.02)
        await asyncio.wait_for(receiving, 30)
    return took


#: the counters of what the services refused: a consumer's dead letters (stored, or over their
#: source's budget and only counted), a gateway's uplinks
REFUSALS = (
    "firewatch_dead_letters_total",
    "firewatch_dead_letters_unstored_total",
    "firewatch_gateway_uplinks_set_aside_total",
)


def health_totals(metrics: dict[str, str]) -> dict[str, float]:
    """From the services' ``/metrics``: batches the gateways had published, and alerts and
    ingest had taken, so far; CPU seconds each process had used."""
    scraped = {name: scrape(url) for name, url in metrics.items()}

    def values(metric: str) -> list[tuple[dict[str, str], float]]:
        return [
            (dict(labels), value)
            for samples in scraped.values()
            for (name, labels), value in samples.items()
            if name == metric
        ]

    published = [v for _, v in values("firewatch_gateway_published_total")]
    applied = dict(
        (labels["consumer"], v) for labels, v in values("firewatch_consumer_messages_applied_total")
    )
    return {
        "published": sum(published),
        "refused": sum(v for metric in REFUSALS for _, v in values(metric)),
        "gateways_publishing": sum(1 for v in published if v > 0),
        "alerts_applied": applied[ALERTS],
        "notices_failed": sum(v for _, v in values("firewatch_notices_failed_total")),
        "ingest_written": sum(v for _, v in values("firewatch_ingest_written_total")),
        **{  # `firewatch up` serves its children's counts labelled with their process
            f"cpu:{name}{'/' + dict(labels)['process'] if labels else ''}": value
            for name, samples in scraped.items()
            for (metric, labels), value in samples.items()
            if metric == "process_cpu_seconds_total"
        },
    }


async def until_every_gateway_publishes(
    metrics: dict[str, str], gateways: int, timeout_s: float
) -> None:
    """Then each has subscribed to its devices' uplinks too (it subscribes before publishing)."""
    deadline = time.monotonic() + timeout_s
    while (await asyncio.to_thread(health_totals, metrics))["gateways_publishing"] < gateways:
        if time.monotonic() > deadline:
            raise RuntimeError(f"not every gateway published within {timeout_s:g} s")
        await asyncio.sleep(0.5)


async def until_alerts_catch_up(metrics: dict[str, str], timeout_s: float) -> float | None:
    """Seconds until the alert service is at most a second's traffic behind what the gateways
    published, or None if it is not within ``timeout_s``.  At start every device's first
    report comes at once, each changing its colour: measured then, the flow and the round trip
    would be the start-up burst's, not the county's steady state."""
    started = time.monotonic()
    before = await asyncio.to_thread(health_totals, metrics)
    while time.monotonic() - started < timeout_s:
        await asyncio.sleep(1)
        now = await asyncio.to_thread(health_totals, metrics)
        behind = now["published"] - now["alerts_applied"]
        if behind <= max(50.0, now["published"] - before["published"]):
            return round(time.monotonic() - started, 1)
        before = now
    return None


class Flow(TypedDict):
    published_per_s: float
    alerts_applied_per_s: float
    ingest_written_per_s: float
    cores: dict[str, float]  # by process


async def flow_rates(metrics: dict[str, str], seconds: float) -> Flow:
    """Batches per second published by the gateways and taken by alerts and ingest, and the
    share of a core each process of the system used meanwhile."""
    before = await asyncio.to_thread(health_totals, metrics)
    await asyncio.sleep(seconds)
    after = await asyncio.to_thread(health_totals, metrics)

    def rate(total: str) -> float:
        return round((after[total] - before[total]) / seconds, 1)

    cores = {
        k.removeprefix("cpu:"): round((after[k] - before[k]) / seconds, 2)
        for k in after
        if k.startswith("cpu:")
    }
    return Flow(
        published_per_s=rate("published"),
        alerts_applied_per_s=rate("alerts_applied"),
        ingest_written_per_s=rate("ingest_written"),
        cores=cores,
    )


@contextlib.contextmanager
def system(
    shape: str, site_file: Path, workdir: Path, env: dict[str, str]
) -> Iterator[dict[str, str]]:
    """The system under test in ``shape``; yields its processes' ``/metrics`` URLs by name."""
    if shape == "up":
        with running_stack(site_file, workdir, env) as api:
            yield {"up": str(api.base_url.join("/metrics"))}
    else:
        with running_services(site_file, workdir, env) as metrics:
            yield metrics


def broker_version(mosquitto: Mosquitto | None) -> str:
    if mosquitto is None:
        return f"amqtt {versions('amqtt')['amqtt']} (embedded in the stack)"
    out = subprocess.run(
        [mosquitto.binary, "-h"], capture_output=True, text=True, check=False
    ).stdout
    return out.splitlines()[0].strip() if out else "mosquitto"


async def run(
    devices: int,
    count: int | None,
    spacing_s: float,
    broker_kind: str,
    shape: str,
    as_json: bool,
    database: str = "sqlite",
    hostile_rate: float = 0.0,
) -> dict[str, Any]:
    if shape == "services" and broker_kind == "embedded":
        raise SystemExit(
            "firewatch bench alarms: the services shape needs a broker between "
            "processes: --broker mosquitto"
        )
    institutions = max(2, devices // DEVICES_EACH)
    count = min(count or institutions // 2, institutions // 2)
    profiles = load_profiles()
    gas_high = next(r for r in profiles[GAS].alarms if r.name == "gas_high")
    gas_set_point = gas_high.set_point
    assert gas_set_point is not None, "the gas detector's gas_high rule has a set point"
    one_key = next(r for r in profiles[BUTTON].alarms if r.immediate)
    poll_s = profiles[GAS].poll_interval_s
    with tempfile.TemporaryDirectory(prefix="fw-bench-") as tmp, WebhookRecorder() as robot:
        workdir = Path(tmp)
        fleet_file, stack_file = workdir / "fleet-site.yaml", workdir / "site.yaml"
        site = county(institutions, robot)
        fleet_file.write_text(yaml.safe_dump(site, allow_unicode=True), encoding="utf-8")

        mosquitto = Mosquitto(workdir) if broker_kind == "mosquitto" else None
        env = {
            "FIREWATCH_NOTICE_STORM_WINDOW_S": "0",
            "FIREWATCH_ALIYUN_SMS_ENDPOINT": robot.sms_endpoint,
            **SMS_ENV,
        }
        postgresql = PostgreSQL(durable=True) if database == "postgresql" else None
        if mosquitto is not None:
            mosquitto.start()  # before the simulators take ports: its own is chosen already
            broker = BrokerAddress.from_url(mosquitto.url)
            env["FIREWATCH_MQTT_URL"] = mosquitto.url
        else:
            broker = BrokerAddress("127.0.0.1", free_port())
            env["FIREWATCH_MQTT_EMBEDDED_PORT"] = str(broker.port)
        fleet = SimulatorFleet(load_site(fleet_file, profiles), profiles, broker, seed=1)
        try:
            stage(f"starting {devices} simulated devices{' and Mosquitto' if mosquitto else ''}")
            await fleet.start()
            if postgresql is not None:
                postgresql.start()
                env["FIREWATCH_DATABASE_URL"] = postgresql.new_database()
            database_version = (
                postgresql.version if postgresql else (f"SQLite {sqlite3.sqlite_version}")
            )
            for gateway in site["gateways"]:  # the stack's gateways poll the servers started here
                line = gateway["endpoints"][0]
                line.update(simulated=False, port=fleet.endpoint_port(line["id"]))
            stack_file.write_text(yaml.safe_dump(site, allow_unicode=True), encoding="utf-8")
            stage(f"starting Firewatch ({shape}, {database})")
            with system(shape, stack_file, workdir, env) as metrics:
                stage("waiting for every gateway to publish")
                await until_every_gateway_publishes(metrics, institutions, 180)
                fleet.start_mqtt()
                stage("waiting for alerts to take every device's first report")
                caught_up_s = await until_alerts_catch_up(metrics, 120)
                hostile_sent = [0]
                refused_before = (await asyncio.to_thread(health_totals, metrics))["refused"]
                flooding = (
                    asyncio.create_task(flood(broker, site, hostile_rate, hostile_sent))
                    if hostile_rate > 0
                    else None
                )
                stage("measuring the flow 5 s, then MQTT round trips")
                flow = await flow_rates(metrics, 5)
                rtt = await mqtt_round_trips(broker, max(20, 2 * count))
                presses = [
                    Measured(
                        f"inst-{i:03d}",
                        f"btn-{i:03d}-0",
                        one_key.title_zh,
                        duty_mobile(i),
                        lambda b: b.flags.get(one_key.field) is True,
                    )
                    for i in range(count)
                ]
                breaches = [
                    Measured(
                        f"inst-{i:03d}",
                        f"gas-{i:03d}-{EFMS_EACH + 1}",
                        gas_high.title_zh,
                        duty_mobile(i),
                        lambda b: b.readings.get(gas_high.field, 0) >= gas_set_point,
                    )
                    for i in range(count, 2 * count)
                ]
                subscribed = asyncio.Event()
                watchers = [
                    asyncio.create_task(
                        watch_breaches(fleet, breaches, gas_high.field, gas_set_point)
                    ),
                    asyncio.create_task(watch_broker(broker, presses + breaches, subscribed)),
                ]
                await subscribed.wait()
                stage(f"pressing {count} buttons and leaking {count} gases, {spacing_s:g} s apart")
                for press, breach in zip(presses, breaches, strict=True):
                    press.event_at = time.perf_counter()
                    await fleet.trigger(press.device_id, "button-press")
                    await fleet.trigger(breach.device_id, "gas-leak")
                    await asyncio.sleep(spacing_s)
                deadline = time.monotonic() + 30 + 3 * poll_s
                measured = presses + breaches
                while time.monotonic() < deadline and not (
                    all(robot.first(m.institution, m.title) for m in measured)
                    and all(robot.first(m.phone, m.title) for m in presses)
                ):
                    await asyncio.sleep(0.1)
                for task in [*watchers, *([flooding] if flooding else [])]:
                    task.cancel()
                await asyncio.sleep(1)  # what the flood sent last is taken (or refused)
                totals = await asyncio.to_thread(health_totals, metrics)
                notices_failed = totals["notices_failed"]
                hostile = {
                    "rate_per_s": hostile_rate,
                    "sent": hostile_sent[0],
                    "refused": totals["refused"] - refused_before,
                }
        finally:
            await fleet.stop()
            if mosquitto is not None:
                mosquitto.stop()
            if postgresql is not None:
                postgresql.stop()

    def latencies(items: list[Measured]) -> list[float]:
        arrived = [(m, robot.first(m.institution, m.title)) for m in items]
        return [a.at - m.event_at for m, a in arrived if a is not None and m.event_at is not None]

    def second_means(items: list[Measured]) -> tuple[list[float], list[float]]:
        """Until the later of the robot's and the SMS request left Firewatch; and how long
        after the first of the two it left (what dispatching on two means adds)."""
        took, gaps = [], []
        for m in items:
            both = (robot.first(m.institution, m.title), robot.first(m.phone, m.title))
            arrived = [a.at for a in both if a is not None]
            if m.event_at is not None and len(arrived) == 2:
                took.append(max(arrived) - m.event_at)
                gaps.append(max(arrived) - min(arrived))
        return took, gaps

    def to_broker(items: list[Measured]) -> dict[str, float]:
        return percentiles_ms(
            [
                m.on_broker_at - m.event_at
                for m in items
                if m.on_broker_at is not None and m.event_at is not None
            ]
        )

    one_key_s, polled_s = latencies(presses), latencies(breaches)
    one_key_ms, polled_ms = percentiles_ms(one_key_s), percentiles_ms(polled_s)
    rtt_ms = percentiles_ms(rtt)
    one_key_to_broker_ms, polled_to_broker_ms = to_broker(presses), to_broker(breaches)
    second_took, second_gaps = second_means(presses)
    one_key_second, second_gap = percentiles_ms(second_took), percentiles_ms(second_gaps)
    second_goal_ms = GOAL_SECOND_MEANS_S * 1000
    polled_goal_ms = (poll_s + GOAL_ONE_KEY_S) * 1000
    figures = {
        "benchmark": "alarms",
        "shape": shape,
        "devices": institutions * DEVICES_EACH,
        "institutions": institutions,
        "modbus_devices": institutions * (EFMS_EACH + GAS_EACH),
        "buttons": institutions * BUTTONS_EACH,
        "poll_interval_s": poll_s,
        "presses": count,
        "breaches": count,
        "spacing_s": spacing_s,
        "broker": broker_version(mosquitto),
        "database": database_version,
        "storm_window_s": 0,
        "alerts_caught_up_after_start_s": caught_up_s,
        "flow": flow,
        "alerts_keeps_up": round(
            flow["alerts_applied_per_s"] / max(flow["published_per_s"], 0.1), 3
        ),
        "mqtt_round_trip_ms": rtt_ms,
        "one_key_ms": one_key_ms,
        "one_key_to_broker_ms": one_key_to_broker_ms,
        "polled_to_broker_ms": polled_to_broker_ms,
        "one_key_missing": count - len(one_key_s),
        "one_key_goal_p99_ms": GOAL_ONE_KEY_S * 1000,
        "one_key_p50_vs_mqtt_round_trip": _ratio(one_key_ms, rtt_ms),
        "polled_ms": polled_ms,
        "polled_missing": count - len(polled_s),
        "polled_goal_p99_ms": polled_goal_ms,
        "polled_p50_vs_mqtt_round_trip": _ratio(polled_ms, rtt_ms),
        "one_key_second_means_ms": one_key_second,
        "one_key_second_after_first_ms": second_gap,
        "second_means_goal_p99_ms": second_goal_ms,
        "second_means_note": "until the second means' request left Firewatch; the providers' "
        "own delivery time is outside Firewatch",
        "robot_throttled": robot.throttled,
        "notice_sends_failed": notices_failed,
        "hostile": hostile,
        "versions": versions("aiomqtt", "pymodbus", "httpx"),
    }

    def row(name: str, ms: dict[str, float], note: str) -> tuple[str, str, str]:
        if not ms["count"]:
            return name, "none arrived", f"within the wait; {note.split('(')[-1].rstrip(')')}"
        return (
            name,
            f"p50 {ms['p50']:,.0f} ms",
            (f"p95 {ms['p95']:,.0f}  p99 {ms['p99']:,.0f}  max {ms['max']:,.0f} ms; {note}"),
        )

    report(
        f"alarms: {institutions * DEVICES_EACH} devices in {institutions} institutions, "
        f"{count} presses and {count} gas breaches, {figures['broker']}, "
        f"{database_version}, {SHAPES[shape]}",
        [
            (
                "alerts takes",
                f"{flow['alerts_applied_per_s']:,.0f} batches/s",
                (
                    f"of {flow['published_per_s']:,.0f}/s published "
                    f"({figures['alerts_keeps_up']:.2f}; below 1 a backlog grows and delays every "
                    "notice)"
                ),
            ),
            (
                "CPU",
                ", ".join(f"{name} {cores:.2f}" for name, cores in flow["cores"].items()),
                "cores used while the flow was measured",
            ),
            (
                "start-up reports",
                "taken in " + (f"{caught_up_s:g} s" if caught_up_s is not None else "> 120 s"),
                "every device's first report, before the flow was measured"
                + ("" if caught_up_s is not None else " (measured behind)"),
            ),
            row("MQTT QoS 1 round trip", rtt_ms, "baseline"),
            row(
                "one-key press -> notice",
                one_key_ms,
                f"{_ratio(one_key_ms, rtt_ms)} x baseline (goal p99 < {GOAL_ONE_KEY_S * 1000:g})",
            ),
            row("  of which to the broker", one_key_to_broker_ms, "device and gateway"),
            row(
                "gas breach -> notice",
                polled_ms,
                f"{_ratio(polled_ms, rtt_ms)} x baseline (goal p99 < {polled_goal_ms:g}, "
                f"poll {poll_s:g} s + 300)",
            ),
            row(
                "  of which to the broker",
                polled_to_broker_ms,
                "device, the poll's wait and the gateway",
            ),
            row(
                "one-key -> 2nd means sent",
                one_key_second,
                f"robot and SMS both left Firewatch (goal p99 well under {second_goal_ms:,.0f}; "
                "the providers' delivery is outside Firewatch)",
            ),
            row("  2nd after the 1st", second_gap, "what sending on two means adds"),
            *(
                [
                    (
                        "hostile messages",
                        f"{hostile['sent']:,} sent at {hostile_rate:g}/s",
                        f"{hostile['refused']:,.0f} refused (dead letters, refused uplinks)",
                    )
                ]
                if hostile_rate > 0
                else []
            ),
        ],
        figures,
        as_json,
    )
    return figures


def _ratio(ms: dict[str, float], baseline: dict[str, float]) -> float | None:
    if not ms["count"] or not baseline["count"]:
        return None
    return round(ms["p50"] / max(baseline["p50"], 0.1), 1)
