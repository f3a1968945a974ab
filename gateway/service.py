"""One gateway: its devices' polls and uplinks -> outbox -> broker, surviving broker outages.

Polling never waits for the broker: readings go into the durable outbox, and a separate
publisher drains it in sequence order whenever the broker is reachable, deleting messages only
once the broker acknowledged them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiomqtt

from firewatch.contract import DeviceEvent, EventType, ReadingBatchEncoder, utc_now
from firewatch.mqtt import BrokerAddress
from firewatch.profiles import DeviceProfile, Transport
from firewatch.site import Device, Gateway, ModbusEndpoint, Site
from firewatch.supervise import Job, supervise
from gateway.modbus_poller import BatchValues, DeliveryTick, EndpointPoller
from gateway.mqtt_bridge import MqttBridge
from gateway.outbox import Outbox

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
        self.outbox = Outbox(outbox_path, outbox_max_messages)
        self.connected = False
        self.published = 0
        #: set once the uplinks of this gateway's MQTT devices are subscribed
        self.listening = asyncio.Event()
        devices = [(d, profiles[d.profile]) for d in site.devices if d.gateway == gateway.id]
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
        self._encoders = {
            d.id: ReadingBatchEncoder(gateway.id, d.id, d.institution, p.kind, d.profile)
            for d, p in devices
        }

    async def run(self) -> None:
        await self.outbox.open()
        try:
            bridge = MqttBridge(self._mqtt_devices, self._readings, self._event)
            # each line on its own: a line that fails must not stop its neighbours' polls
            jobs: dict[str, Job] = {f"line:{p.endpoint.id}": p.run for p in self.pollers}
            if bridge.topics:
                jobs["mqtt-heartbeats"] = bridge.watch_heartbeats

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

    def _readings(
        self, device: Device, readings: BatchValues[float], flags: BatchValues[bool],
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
                    self.gateway.id, self.broker.url, group.exceptions[0], delay,
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

    @staticmethod
    async def _receive(client: aiomqtt.Client, bridge: MqttBridge) -> None:
        async for message in client.messages:
            await bridge.handle(str(message.topic), bytes(message.payload))

    def status(self) -> dict[str, Any]:
        return {
            "gateway_id": self.gateway.id,
            "broker_connected": self.connected,
            "outbox_waiting": self.outbox.size,
            "outbox_dropped": self.outbox.dropped,
            "published": self.published,
            "devices": {
                device_id: vars(stats)
                for poller in self.pollers
                for device_id, stats in poller.stats.items()
            },
        }
