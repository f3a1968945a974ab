"""Connecting to the MQTT broker: a real one from a URL, or the embedded amqtt broker."""

from __future__ import annotations

import logging
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import aiomqtt

if TYPE_CHECKING:
    from amqtt.broker import Broker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    embedded: bool = False
    #: ``mqtts://``: the broker's certificate is checked against ``ca_file``, or the system's
    #: trusted CAs when it is None
    tls: bool = False
    ca_file: Path | None = None

    @classmethod
    def from_url(cls, url: str, ca_file: Path | None = None) -> BrokerAddress:
        """``mqtt://`` in the clear (a compose network, a VPN), ``mqtts://`` over TLS: a gateway
        at an institution that reaches the county's broker across the internet."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "tcp", "mqtts") or not parts.hostname:
            raise ValueError(
                f"FIREWATCH_MQTT_URL {url!r}: expected mqtt://[user:pass@]host[:port] "
                "or mqtts://[user:pass@]host[:port]"
            )
        tls = parts.scheme == "mqtts"
        if ca_file is not None and not tls:
            raise ValueError(
                f"FIREWATCH_MQTT_CA_FILE is set, but FIREWATCH_MQTT_URL {url!r} is not mqtts://"
            )
        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            ca_file=ca_file,
        )

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def tls_context(self) -> ssl.SSLContext | None:
        """Certificate and host name checked, TLS 1.2 at least; None in the clear."""
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def client(self, identifier: str, *, persistent: bool = False, **kwargs) -> aiomqtt.Client:
        """An MQTT 3.1.1 client (the embedded broker speaks nothing newer).

        ``persistent`` keeps the session on the broker across reconnects (clean_session off), so
        QoS 1 messages that arrive while a consumer is away are delivered when it is back.

        Nagle's algorithm is off (TCP_NODELAY): an MQTT message is small, and with it on, one
        published while the last is unacknowledged waits for the broker's delayed ACK (40 ms
        on Linux).  A gateway's button press took 45 ms to reach the broker at the median that
        way, 6 ms without (firewatch bench alarms, 1,000 devices).
        """
        client = aiomqtt.Client(
            self.host,
            self.port,
            identifier=identifier,
            username=self.username,
            password=self.password,
            clean_session=not persistent,
            keepalive=30,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            tls_context=self.tls_context(),
            **kwargs,
        )
        client.pending_calls_threshold = 10_000
        return client


def free_port(host: str = "127.0.0.1", taken: set[int] | None = None) -> int:
    """A port nothing listens on; not one of ``taken``, which it joins.

    Pass the same ``taken`` set when picking several ports before binding any: the system
    hands a just-released port out again, and two servers would then be given the same one.
    """
    taken = set() if taken is None else taken
    while True:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in taken:
            taken.add(port)
            return port


class EmbeddedBroker:
    """amqtt in this process, for laptops and demos; MQTT 3.1.1, no shared subscriptions."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._broker: Broker | None = None

    @property
    def address(self) -> BrokerAddress:
        return BrokerAddress(self.host, self.port, embedded=True)

    async def start(self) -> None:
        from amqtt.broker import Broker

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"firewatch.amqtt_sessions.EveryoneKeepsTheirSession": {}},
        }
        self._broker = Broker(config)
        await self._broker.start()
        log.info("embedded MQTT broker (amqtt) listening on %s:%s", self.host, self.port)

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None
