"""The wire contract: MQTT topics and payload schemas shared by every part.

Gateway, ingest, alerts and simulators import their topics and payload models from here and
nowhere else, so that a change to the contract is one change in one file.  The contract is
versioned in the topic (``firewatch/v1/...``) and in every payload (``schema`` field): a consumer
rejects a payload of a schema it does not know instead of guessing.

Readings travel in *batches*: one message per device poll carrying every value read in that
poll, never one message per value (the embedded broker moves ~1,000 messages/s).

Every message a gateway publishes carries the gateway id, the *incarnation* of its durable
outbox and a sequence number that increases monotonically within that incarnation across
restarts (it is the row id of the outbox).  The incarnation is an id drawn when the outbox file
is created: a gateway whose outbox is replaced (new SD card, reflash) starts a new stream at
seq 1, which consumers must not mistake for a replay of numbers they already applied.
Consumers record what they applied by (gateway, incarnation, seq), which turns the broker's
at-least-once delivery into exactly-once effects.

Besides readings and device events a gateway publishes a heartbeat on a period of its own,
through the same outbox and broker as its readings, so that the alert service can tell a
broken chain (gateway, its link, the broker) from a quiet site.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    StrictBool,
    TypeAdapter,
    ValidationError,
    model_validator,
)

CONTRACT_VERSION = "v1"
TOPIC_ROOT = f"firewatch/{CONTRACT_VERSION}"

# Final: each is its literal type too, so the models' ``Literal[...]`` fields can default to it
READINGS_SCHEMA: Final = "firewatch.readings/1"
EVENT_SCHEMA: Final = "firewatch.event/1"
HEARTBEAT_SCHEMA: Final = "firewatch.heartbeat/1"
CHANGE_SCHEMA: Final = "firewatch.change/1"

MAX_SEQ = 2**63 - 1

#: Identifier syntax for gateways, devices and institutions: safe inside an MQTT topic level.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
Identifier = Annotated[str, Field(pattern=ID_PATTERN)]

#: reading, flag and rule names: safe as SQL identifiers, InfluxDB fields and JSON keys
FIELD_PATTERN = r"^[a-z][a-z0-9_]*$"
FieldName = Annotated[str, Field(pattern=FIELD_PATTERN, max_length=64)]
_FIELD_RE = re.compile(FIELD_PATTERN)

#: An outbox's incarnation: 16 lower-case hex digits drawn when the outbox file is created
#: (``secrets.token_hex(8)``).  Empty: a message from an outbox made before incarnations
#: existed, one stream per gateway as it was then.
INCARNATION_PATTERN = r"^([0-9a-f]{16})?$"
Incarnation = Annotated[str, Field(pattern=INCARNATION_PATTERN)]


class DeviceKind(StrEnum):
    """What a device is for; also the time-series measurement name."""

    ELECTRICAL_FIRE_MONITOR = "electrical_fire_monitor"
    GAS_DETECTOR = "gas_detector"
    ONE_KEY_ALARM = "one_key_alarm"


class DeviceState(StrEnum):
    """The state the map colours a device by."""

    NORMAL = "normal"
    ALARM = "alarm"
    FAULT = "fault"
    OFFLINE = "offline"


class EventType(StrEnum):
    """Things that happen to a device's link rather than values it reports: it stopped
    answering (``offline``), it answers but unusably (``fault``: Modbus exception replies,
    garbled frames, values that cannot be decoded), or it answers properly again
    (``online``).  Each event replaces what the one before said."""

    OFFLINE = "offline"
    ONLINE = "online"
    FAULT = "fault"


def utc_now() -> datetime:
    return datetime.now(UTC)


class _Stream(BaseModel):
    """What every message a gateway publishes carries: where it stands in the gateway's stream."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gateway_id: Identifier
    incarnation: Incarnation = Field(
        default="", description="The gateway outbox's incarnation: a new outbox, a new stream."
    )
    # at most 2**63-1: what a database's BIGINT holds; a larger one could never be recorded
    seq: int = Field(
        ge=1,
        le=MAX_SEQ,
        description="Sequence number, strictly increasing within the gateway's incarnation.",
    )


class _Message(_Stream):
    device_id: Identifier
    institution_id: Identifier
    kind: DeviceKind
    # a naive time cannot be compared with the stored ones: refused here, not crashed on later
    ts: AwareDatetime = Field(description="When the device was read (timezone-aware).")

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


class ReadingBatch(_Message):
    """Every value read from one device in one poll.

    ``readings`` holds scaled physical values keyed by the profile's register names
    (``residual_current`` in mA, ``gas_concentration`` in %LEL, ...).  ``flags`` holds the
    device's own status bits decoded by the profile (``sensor_fault``, ``button_pressed``, ...).
    """

    schema_: Literal["firewatch.readings/1"] = Field(default=READINGS_SCHEMA, alias="schema")
    profile: str
    # finite only: NaN compares false with every set point, and PostgreSQL's JSON refuses it
    readings: dict[FieldName, FiniteFloat] = Field(default_factory=dict)
    # strict: "y" or 1 from a careless firmware is refused here, not guessed at downstream
    flags: dict[FieldName, StrictBool] = Field(default_factory=dict)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


class ReadingBatchEncoder:
    """The bytes of one device's :class:`ReadingBatch` without building the model per poll.

    A gateway sends a batch per poll, thousands a second, and validating what it built itself
    through pydantic cost it as much as the Modbus request.  What never changes for a device
    (ids, kind, profile) is validated once here, by building the model.  The readings and flags
    come as the members of their JSON objects (``"name":value``, comma-separated), each made and
    checked by :meth:`reading_member` and :meth:`flag_member` as the model checks it: a field
    name, a finite number, a real bool.  Why members rather than dicts: the gateway's decoder
    remembers the member each raw register word makes (see gateway/block_decoder.py), so a poll
    is formatted by a lookup per register, with no dict built, walked, checked and formatted
    again per batch.  The JSON is the model's own, key for key and value for value (only a
    float's exponent may be spelt ``1e-06`` for ``1e-6``; tests/test_contract.py holds the two
    side by side); the model stays the one definition.

    Formatting the time was a fifth of a batch: the last time formatted is kept, shared by
    every device's encoder, so the batches of one poll round stamped with one ``datetime``
    (the gateway gives the polls delivered together the same one) format it once.
    """

    #: the last time formatted, and its text
    _last_stamp: ClassVar[tuple[datetime | None, str]] = (None, "")
    _layouts: ClassVar[dict[str, str]] = {}

    def __init__(
        self,
        gateway_id: str,
        device_id: str,
        institution_id: str,
        kind: DeviceKind,
        profile: str,
        incarnation: str = "",
    ) -> None:
        template = ReadingBatch(
            gateway_id=gateway_id,
            incarnation=incarnation,
            seq=1,
            device_id=device_id,
            institution_id=institution_id,
            kind=kind,
            ts=datetime(2000, 1, 1, tzinfo=UTC),
            profile=profile,
        )
        self.topic = message_topic(template)
        # the model's own JSON, '%' escaped, with seq, device id, ts and the members of
        # readings and flags left open for %-formatting (an identifier is JSON as it is: it
        # has no character to escape)
        static = template.to_bytes().decode().replace("%", "%%")
        device, empty = f'"device_id":"{device_id}",', ',"readings":{},"flags":{}}'
        assert static.count(device) == 1 and static.endswith(empty), static
        layout = (
            static.replace('"seq":1,', '"seq":%d,')
            .replace(device, '"device_id":"%s",')
            .replace('"2000-01-01T00:00:00Z"', '"%s"')
            .removesuffix(empty)
            + ',"readings":{%s},"flags":{%s}}'
        )
        #: one layout shared by the encoders of one model's devices at an institution, so
        #: that what a batch touches stays small and warm however many devices a gateway polls
        self._layout = self._layouts.setdefault(layout, layout)
        self._device_id = device_id

    def encode(self, seq: int, ts: datetime, readings: str, flags: str) -> bytes:
        """The batch whose readings and flags objects hold these members (see
        :meth:`members`)."""
        if not 1 <= seq <= MAX_SEQ:
            raise ValueError(f"seq {seq} is outside 1..{MAX_SEQ}")
        last, stamp = ReadingBatchEncoder._last_stamp
        if ts is not last:  # a datetime is immutable: the same object, the same text
            stamp = self._stamp(ts)
            ReadingBatchEncoder._last_stamp = (ts, stamp)
        return (self._layout % (seq, self._device_id, stamp, readings, flags)).encode()

    @classmethod
    def members(cls, readings: dict[str, float], flags: dict[str, bool]) -> tuple[str, str]:
        """The members of a batch's readings and flags objects, each checked."""
        return (
            ",".join(map(cls.reading_member, readings, readings.values())),
            ",".join(map(cls.flag_member, flags, flags.values())),
        )

    @staticmethod
    def reading_member(name: str, value: float) -> str:
        """``"name":value``; float() refuses what is no number, and NaN and infinity are
        refused as the model refuses them."""
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"reading {name!r} must be finite, got {value}")
        # %r of a float is its shortest repr, as JSON wants it
        return f"{_member_name(name)}{value!r}"

    @staticmethod
    def flag_member(name: str, value: bool) -> str:
        if type(value) is not bool:
            raise ValueError(f"flag {name!r} must be a boolean, got {value!r}")
        return _member_name(name) + ("true" if value else "false")

    @staticmethod
    def _stamp(ts: datetime) -> str:
        offset = ts.utcoffset()
        if offset is None:
            raise ValueError("ts must be timezone-aware")
        stamp = ts.isoformat()
        return stamp[:-6] + "Z" if not offset else stamp  # +00:00


def _member_name(name: str) -> str:
    """``"name":``, once ``name`` is known to be a field name (which needs no escaping)."""
    if _FIELD_RE.fullmatch(name) is None or len(name) > 64:
        raise ValueError(f"{name!r} is not a field name")
    return f'"{name}":'


class DeviceEvent(_Message):
    """A change in a device's reachability, with the reason in words a technician can act on."""

    schema_: Literal["firewatch.event/1"] = Field(default=EVENT_SCHEMA, alias="schema")
    event: EventType
    reason: str = ""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


class GatewayHeartbeat(_Stream):
    """A gateway saying it is alive, on the path its readings take (outbox, broker, consumers).

    ``ts`` is when the gateway made it; ``outbox`` how many messages were waiting in its outbox
    then (a growing number: the gateway cannot reach the broker as fast as it reads).
    """

    schema_: Literal["firewatch.heartbeat/1"] = Field(default=HEARTBEAT_SCHEMA, alias="schema")
    ts: AwareDatetime = Field(description="When the gateway made the heartbeat.")
    outbox: int = Field(default=0, ge=0, le=MAX_SEQ, description="Messages waiting to be sent.")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


class ChangeKind(StrEnum):
    """What a change notice is about; ``resync``: notices were lost, reload everything."""

    DEVICE = "device"
    ALARM = "alarm"
    HAZARD = "hazard"
    RESYNC = "resync"


class ChangeNotice(BaseModel):
    """A committed change of a device's state, an alarm or a ledger entry, for the live pages.

    The alert service publishes them, every web replica reads them (firewatch.change_relay).
    ``data`` is the changed row's columns as stored; the web app shapes them as its JSON
    routes do.  A ``resync`` notice belongs to no institution and carries no data.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: Literal["firewatch.change/1"] = Field(default=CHANGE_SCHEMA, alias="schema")
    kind: ChangeKind
    institution_id: Identifier | Literal[""]
    data: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _resync_has_no_institution(self) -> ChangeNotice:
        if (self.kind is ChangeKind.RESYNC) != (self.institution_id == ""):
            raise ValueError("a resync notice, and only it, names no institution")
        return self

    def to_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


#: a message about one device
DeviceMessage = ReadingBatch | DeviceEvent
#: anything a gateway publishes
GatewayMessage = ReadingBatch | DeviceEvent | GatewayHeartbeat
_message_adapter: TypeAdapter[GatewayMessage] = TypeAdapter(
    Annotated[GatewayMessage, Field(discriminator="schema_")]
)


class InvalidPayload(ValueError):
    """A message that does not follow the contract; ``reason`` says what was wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_message(topic: str, payload: bytes) -> GatewayMessage:
    """Decode a gateway message and check that it agrees with the topic it came on."""
    try:
        message = _message_adapter.validate_json(payload)
    except ValidationError as exc:
        raise _breach(exc) from None
    _check_topic(topic, message_topic(message))
    return message


def parse_change(topic: str, payload: bytes) -> ChangeNotice:
    """Decode a change notice and check that it agrees with the topic it came on."""
    try:
        notice = ChangeNotice.model_validate_json(payload)
    except ValidationError as exc:
        raise _breach(exc) from None
    _check_topic(topic, change_topic(notice))
    return notice


def _breach(exc: ValidationError) -> InvalidPayload:
    errors = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '<payload>'}: {e['msg']}" for e in exc.errors()[:5]
    )
    return InvalidPayload(f"payload does not match the {CONTRACT_VERSION} contract: {errors}")


def _check_topic(topic: str, expected: str) -> None:
    if topic != expected:
        raise InvalidPayload(f"payload for {expected!r} arrived on topic {topic!r}")


# --- topics -------------------------------------------------------------------------------

READINGS_PREFIX = f"{TOPIC_ROOT}/readings"
EVENTS_PREFIX = f"{TOPIC_ROOT}/events"
HEARTBEATS_PREFIX = f"{TOPIC_ROOT}/heartbeats"


def readings_filter(gateway_id: str = "+") -> str:
    """The readings of one gateway's devices; of every gateway's by default."""
    return f"{READINGS_PREFIX}/{gateway_id}/+"


def events_filter(gateway_id: str = "+") -> str:
    return f"{EVENTS_PREFIX}/{gateway_id}/+"


def heartbeats_filter(gateway_id: str = "+") -> str:
    return f"{HEARTBEATS_PREFIX}/{gateway_id}"


#: Every message a gateway publishes; ingest and alerts subscribe to these filters, or to the
#: same ones for each gateway of their partition (firewatch.partition).
READINGS_FILTER = readings_filter()
EVENTS_FILTER = events_filter()
HEARTBEATS_FILTER = heartbeats_filter()

#: Change notices, one topic level per institution: what every web replica subscribes to.
CHANGES_PREFIX = f"{TOPIC_ROOT}/changes"
CHANGES_FILTER = f"{CHANGES_PREFIX}/+"
#: the level of resync notices: an identifier cannot start with "_", so no institution has it
RESYNC_LEVEL = "_resync"


def readings_topic(gateway_id: str, device_id: str) -> str:
    return f"{READINGS_PREFIX}/{gateway_id}/{device_id}"


def events_topic(gateway_id: str, device_id: str) -> str:
    return f"{EVENTS_PREFIX}/{gateway_id}/{device_id}"


def heartbeat_topic(gateway_id: str) -> str:
    return f"{HEARTBEATS_PREFIX}/{gateway_id}"


def message_topic(message: GatewayMessage) -> str:
    if isinstance(message, ReadingBatch):
        return readings_topic(message.gateway_id, message.device_id)
    if isinstance(message, DeviceEvent):
        return events_topic(message.gateway_id, message.device_id)
    return heartbeat_topic(message.gateway_id)


def change_topic(notice: ChangeNotice) -> str:
    return f"{CHANGES_PREFIX}/{notice.institution_id or RESYNC_LEVEL}"
