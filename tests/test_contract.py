"""The wire contract: what every part accepts and rejects on the broker."""

from datetime import UTC, datetime

import pytest

from firewatch.contract import (
    DeviceEvent,
    EventType,
    InvalidPayload,
    ReadingBatch,
    parse_message,
    readings_topic,
)


def batch(**changes) -> ReadingBatch:
    fields = dict(gateway_id="gw-1", seq=7, device_id="dev-1", institution_id="inst-1",
                  kind="gas_detector", ts=datetime(2026, 11, 22, tzinfo=UTC),
                  profile="generic-gas-lel", readings={"gas_concentration": 1.5},
                  flags={"sensor_fault": False})
    return ReadingBatch(**{**fields, **changes})


def test_a_batch_survives_the_trip_through_bytes():
    original = batch()
    assert parse_message(readings_topic("gw-1", "dev-1"), original.to_bytes()) == original


def test_an_event_is_told_apart_from_a_batch_by_its_schema():
    event = DeviceEvent(gateway_id="gw-1", seq=8, device_id="dev-1", institution_id="inst-1",
                        kind="gas_detector", ts=datetime.now(UTC), event=EventType.OFFLINE,
                        reason="no answer")
    parsed = parse_message("firewatch/v1/events/gw-1/dev-1", event.to_bytes())
    assert isinstance(parsed, DeviceEvent) and parsed.event is EventType.OFFLINE


def test_a_payload_on_another_devices_topic_is_rejected():
    with pytest.raises(InvalidPayload, match="arrived on topic"):
        parse_message(readings_topic("gw-1", "dev-2"), batch().to_bytes())


@pytest.mark.parametrize("payload, reason", [
    (b"not json", "Invalid JSON"),
    (b'{"schema": "firewatch.readings/9"}', "schema"),
    (batch().to_bytes().replace(b'"seq":7', b'"seq":0'), "seq"),
    (batch().to_bytes().replace(b'"gas_concentration":1.5', b'"gas_concentration":"high"'),
     "readings.gas_concentration"),
])
def test_a_broken_payload_is_rejected_with_a_reason_naming_the_field(payload, reason):
    with pytest.raises(InvalidPayload) as err:
        parse_message(readings_topic("gw-1", "dev-1"), payload)
    assert reason in err.value.reason
