"""Every Firewatch MQTT connection, on a real Mosquitto."""

from __future__ import annotations

import socket

from firewatch.bench.servers import Mosquitto
from firewatch.mqtt import BrokerAddress


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
