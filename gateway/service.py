"""One gateway: its devices' polls and uplinks -> outbox -> broker, surviving broker outages.

Polling never waits for the broker: readings go into the durable outbox, and a separate
publisher drains it in sequence order whenever the broker is reachable, deleting messages only
once the broker acknowledged them.  A device's MQTT report is acknowledged to the broker only
once its batch is in the outbox (manual acks on a persistent session): a gateway that dies in
between gets the report again when it reconnects.  A heartbeat goes through the outbox every
``heartbeat_interval_s`` of the site's gateway, so that the alert service can tell a broken
chain from a quiet site.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiomqtt

from firewatch.contract import (
    DeviceEvent,
    EventType,
    GatewayHeartbeat,
    ReadingBatchEncoder,
    utc_now,
)
from firewatch.mqtt import BrokerAddress
from firewatch.profiles import Condition, DeviceProfile, Transport
from firewatch.site import Device, Gateway, ModbusEndpoint, Site
from firewatch.supervise import Job, supervise
from gateway.modbus_poller import BatchValues, DeliveryTick, EndpointPoller
from gateway.mqtt_bridge import MqttBridge
from gateway.outbox import Keep, Outbox

log = logging.getLogger(__name__)

PUBLISH_BATCH = 200


class GatewayService:
    def __init__(
        self,
        gateway: Gateway,
        site: Site,
        profiles: dict[str, DeviceProfile],
        broker: BrokerAddress,
        outbox_path: Path,
        endpoint_port: Callable[[ModbusEndpoint], int] = lambda e: e.port,
        outbox_max_messages: int = 1_000_000,
    ) -> None:
        self.gateway = gateway
        self.broker = broker
        devices = [(d, profiles[d.profile]) for d in site.devices if d.gateway == gateway.id]
        #: this gateway's devices by id, each with its profile
        self.devices = {d.id: (d, p) for d, p in devices}
        self.outbox = Outbox(outbox_path, outbox_max_messages, Keep(_alarm_thresholds(devices)))
        self.connected = False
        self.published = 0
        #: device reports received but not stored (the outbox failed): left unacknowledged
        self.uplinks_unstored = 0
        #: set once the uplinks of this gateway's MQTT devices are subscribed
        self.listening = asyncio.Event()
        self.bridge: MqttBridge | None = None
        deliveries = DeliveryTick()
        self.pollers = [
            EndpointPoller(
                endpoint,
                endpoint_port(endpoint),
                [(d, p) for d, p in devices if d.endpoint == endpoint.id],
                self._readings,
                self._event,
                deliveries,
            )
            for endpoint in gateway.endpoints
            if any(d.endpoint == endpoint.id for d, _ in devices)
        ]
        self._mqtt_devices = [(d, p) for d, p in devices if p.transport is Transport.MQTT]
        self._profiles = profiles
        self._encoders = _Encoders(self)

    async def run(self) -> None:
        await self.outbox.open()
        self._encoders.clear()  # a run after a restart may find a new outbox, a new incarnation
        try:
            bridge = self.bridge = MqttBridge(self._mqtt_devices, self._readings, self._event)
            # each line on its own: a line that fails must not stop its neighbours' polls
            jobs: dict[str, Job] = {f"line:{p.endpoint.id}": p.run for p in self.pollers}
            if bridge.topics:
                jobs["mqtt-heartbeats"] = bridge.watch_heartbeats
            jobs["heartbeats"] = self._heartbeats

            async def broker() -> None:
                try:
                    await self._stay_connected(bridge)
                finally:
                    # restarted after any error, the publisher starts again from what the
                    # broker has not acknowledged, as after a lost connection
                    self.connected = False
                    self.outbox.publishing_stopped()

            jobs["broker"] = broker
            await supervise(jobs)
        finally:
            await self.outbox.close()

    async def _heartbeats(self) -> None:
        """A heartbeat now and every ``heartbeat_interval_s``, through the outbox like the
        readings.  One that cannot be stored is logged (the outbox counts it); the next one
        tries again."""
        while True:
            try:
                await self.outbox.put(
                    lambda seq: GatewayHeartbeat(
                        gateway_id=self.gateway.id,
                        incarnation=self.outbox.incarnation,
                        seq=seq,
                        ts=utc_now(),
                        outbox=self.outbox.size,
                    )
                )
            except Exception as exc:
                log.error("gateway %s: heartbeat not stored: %s", self.gateway.id, exc)
            await asyncio.sleep(self.gateway.heartbeat_interval_s)

    def _readings(
        self,
        device: Device,
        readings: BatchValues[float],
        flags: BatchValues[bool],
        ts: datetime,
    ) -> asyncio.Future[None]:
        """Queue a poll's batch; the future is done once it is on disk (see Outbox.submit)."""
        encoder = self._encoders[device.id]
        return self.outbox.submit(
            lambda seq: (encoder.topic, encoder.encode(seq, ts, readings.json, flags.json))
        )

    async def _event(self, device: Device, event: EventType, reason: str) -> None:
        ts = utc_now()
        await self.outbox.put(
            lambda seq: DeviceEvent(
                gateway_id=self.gateway.id,
                incarnation=self.outbox.incarnation,
                seq=seq,
                device_id=device.id,
                institution_id=device.institution,
                kind=self._profiles[device.profile].kind,
                ts=ts,
                event=event,
                reason=reason,
            )
        )

    async def _stay_connected(self, bridge: MqttBridge) -> None:
        delay = 0.2
        while True:
            # a persistent session: a button pressed while the gateway restarts still arrives
            client = self.broker.client(
                f"fw-gateway-{self.gateway.id}", persistent=True, max_inflight_messages=100
            )
            # aiomqtt has no public switch for it: a device's report is acknowledged once its
            # batch is in the outbox (see _receive), not when it arrives
            client._client.manual_ack_set(True)
            try:
                async with client:
                    self.connected = True
                    delay = 0.2
                    log.info("gateway %s connected to %s", self.gateway.id, self.broker.url)
                    for topic in bridge.topics:
                        await client.subscribe(topic, qos=1)
                    self.listening.set()
                    async with asyncio.TaskGroup() as tasks:
                        tasks.create_task(self._publish(client))
                        tasks.create_task(self._receive(client, bridge))
            except* aiomqtt.MqttError as group:
                self.connected = False
                self.outbox.publishing_stopped()
                log.warning(
                    "gateway %s: broker %s unreachable (%s); retrying in %.1f s, %d queued",
                    self.gateway.id,
                    self.broker.url,
                    group.exceptions[0],
                    delay,
                    self.outbox.size,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)

    async def _publish(self, client: aiomqtt.Client) -> None:
        while True:
            await self.outbox.wait()
            rows = await self.outbox.oldest(PUBLISH_BATCH)
            if not rows:
                continue
            await asyncio.gather(
                *(client.publish(topic, payload, qos=1) for _, topic, payload in rows)
            )
            await self.outbox.acknowledge(rows[-1][0])
            self.published += len(rows)

    async def _receive(self, client: aiomqtt.Client, bridge: MqttBridge) -> None:
        """Each device report into the outbox, acknowledged to the broker once it is stored.

        One that cannot be used is set aside by the bridge, and acknowledged: sent again it
        would fail again.  One that the outbox fails to store is left unacknowledged, so the
        broker sends it again when the gateway next connects, and the loop goes on.
        """
        async for message in client.messages:
            ack = _Ack(client, message.mid, message.qos)
            try:
                stored = await bridge.handle(str(message.topic), bytes(message.payload))
            except Exception as exc:
                self.uplinks_unstored += 1
                log.error(
                    "gateway %s: a report on %s could not be stored (%s); the broker "
                    "sends it again when the gateway reconnects",
                    self.gateway.id,
                    message.topic,
                    exc,
                )
                continue
            if stored is None:
                ack()
            else:
                stored.add_done_callback(ack.once_stored)

    def status(self) -> dict[str, Any]:
        return {
            "gateway_id": self.gateway.id,
            "broker_connected": self.connected,
            "outbox_incarnation": self.outbox.incarnation,
            "outbox_waiting": self.outbox.size,
            "outbox_dropped": dict(self.outbox.dropped_by_kind),
            "published": self.published,
            "devices": {
                device_id: vars(stats)
                for poller in self.pollers
                for device_id, stats in poller.stats.items()
            },
        }


class _Ack:
    """The PUBACK of one device report, sent on the connection it came on, if still there."""

    __slots__ = ("client", "mid", "qos")

    def __init__(self, client: aiomqtt.Client, mid: int, qos: int) -> None:
        self.client, self.mid, self.qos = client, mid, qos

    def __call__(self) -> None:
        if self.qos and self.client._client.is_connected():
            self.client._client.ack(self.mid, self.qos)

    def once_stored(self, stored: asyncio.Future[None]) -> None:
        if not stored.cancelled() and stored.exception() is None:
            self()


class _Encoders(dict[str, ReadingBatchEncoder]):
    """Each device's batch encoder, made on its first poll: it carries the outbox's
    incarnation, known only once the outbox is open."""

    def __init__(self, service: GatewayService) -> None:
        super().__init__()
        self._service = service

    def __missing__(self, device_id: str) -> ReadingBatchEncoder:
        service = self._service
        assert service.outbox.incarnation, "outbox not open"
        device, profile = service.devices[device_id]
        encoder = self[device_id] = ReadingBatchEncoder(
            service.gateway.id,
            device.id,
            device.institution,
            profile.kind,
            device.profile,
            service.outbox.incarnation,
        )
        return encoder


def _alarm_thresholds(
    devices: list[tuple[Device, DeviceProfile]],
) -> dict[str, dict[str, float]]:
    """Per device, the lowest value of each reading that matters to one of its ``above``
    alarm rules (the site's set point, less the hysteresis): a full outbox keeps such batches."""
    thresholds: dict[str, dict[str, float]] = {}
    for device, profile in devices:
        for rule in profile.alarms:
            set_point = device.set_points.get(rule.name, rule.set_point)
            if rule.condition is Condition.ABOVE and set_point is not None:
                lows = thresholds.setdefault(device.id, {})
                low = set_point - rule.hysteresis
                lows[rule.field] = min(low, lows.get(rule.field, low))
    return thresholds
