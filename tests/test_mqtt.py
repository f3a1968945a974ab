"""Every Firewatch MQTT connection, on a real Mosquitto."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from pathlib import Path

import aiomqtt
import pytest

from firewatch.bench.servers import Mosquitto
from firewatch.mqtt import BrokerAddress, free_port


async def test_a_small_message_is_sent_at_once_not_held_for_the_brokers_delayed_ack(tmp_path):
    """Nagle's algorithm off on the client's socket: with it on, a button press published while
    the gateway's last message was unacknowledged reached the broker ~40 ms late."""
    broker = Mosquitto(tmp_path)
    broker.start()
    try:
        async with BrokerAddress.from_url(broker.url).client("test-nodelay") as client:
            sock = client._client.socket()  # aiomqtt gives no other way to the socket
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        broker.stop()


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _certificates(folder: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA of ``name`` and a certificate it signed for 127.0.0.1: the county's private CA."""
    folder.mkdir()
    ca_key, ca, key, request, cert = (
        folder / f for f in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt")
    )
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             f"/CN={name}", "-keyout", ca_key, "-out", ca)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", key, "-out", request)  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
             "-days", "2", "-extfile", folder / "san.ext", "-out", cert)  # fmt: skip
    return ca, cert, key


async def test_a_gateway_reaches_the_countys_broker_over_tls_and_refuses_a_broker_it_cannot_trust(
    tmp_path,
):
    """A gateway at an institution crosses the internet to the county's broker: mqtts:// with
    the broker's certificate checked against the county's CA, never one it cannot verify."""
    ca, cert, key = _certificates(tmp_path / "county", "county-ca")
    stranger_ca, _, _ = _certificates(tmp_path / "stranger", "stranger-ca")
    tls_port = free_port()
    broker = Mosquitto(
        tmp_path / "broker",
        extra_config=f"listener {tls_port} 127.0.0.1\n"
        f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\ntls_version tlsv1.2\n",
    )
    broker.start()
    url = f"mqtts://127.0.0.1:{tls_port}"
    try:
        address = BrokerAddress.from_url(url, ca_file=ca)
        async with (
            address.client("test-tls-consumer") as consumer,
            address.client("test-tls-gateway") as gateway,
        ):
            await consumer.subscribe("firewatch/v1/test", qos=1)
            await gateway.publish("firewatch/v1/test", b"press", qos=1)
            message = await asyncio.wait_for(anext(aiter(consumer.messages)), 10)
        assert message.payload == b"press"
        with pytest.raises(aiomqtt.MqttError, match="CERTIFICATE_VERIFY_FAILED"):
            async with BrokerAddress.from_url(url, ca_file=stranger_ca).client("test-tls-dupe"):
                pass
    finally:
        broker.stop()


def test_a_ca_file_for_a_broker_in_the_clear_is_refused_as_a_likely_mistake():
    with pytest.raises(ValueError, match="FIREWATCH_MQTT_CA_FILE is set"):
        BrokerAddress.from_url("mqtt://broker.example:1883", ca_file=Path("ca.crt"))
