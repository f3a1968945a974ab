"""The embedded broker's door: everyone in, and a persistent session kept as MQTT says.

amqtt's own ``AnonymousAuthPlugin`` marks every client it lets in *anonymous*, and amqtt keeps
nothing for an anonymous client once it disconnects: its subscriptions are dropped within a
second and the QoS 1 messages published meanwhile are queued for nobody.  A consumer that
reconnected (a keep-alive missed under load) lost what the gateways published while it was
away.  This plugin lets every client in, as the embedded broker always has (it listens on
loopback for laptops and demos), without that mark, so a client that asks for a persistent
session (clean_session off) gets one.
"""

from __future__ import annotations

from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session


class EveryoneKeepsTheirSession(BaseAuthPlugin):
    async def authenticate(self, *, session: Session) -> bool:
        return True
