"""The wire contract: what every part accepts and rejects on the broker."""

from datetime import UTC, datetime

import pytest

from firewatch.contract import (
    ChangeKind,
    ChangeNotice,
    DeviceEvent,
    EventType,
    InvalidPayload,
    ReadingBatch,
    change_topic,
    parse_change,
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
    # a name that is no field name would break the line protocol ingest writes
    (batch().to_bytes().replace(b'"gas_concentration":1.5', b'"gas level,x=1":1.5'),
     "readings.gas level,x=1"),
    (batch().to_bytes().replace(b'"sensor_fault":false', b'"sensor_fault":"y"'),
     "flags.sensor_fault"),
])
def test_a_broken_payload_is_rejected_with_a_reason_naming_the_field(payload, reason):
    with pytest.raises(InvalidPayload) as err:
        parse_message(readings_topic("gw-1", "dev-1"), payload)
    assert reason in err.value.reason


def test_a_change_notice_arrives_on_its_institutions_topic_and_one_on_another_is_refused():
    notice = ChangeNotice(kind=ChangeKind.DEVICE, institution_id="inst-1",
                          data={"id": "dev-1", "state": "alarm"})
    assert change_topic(notice) == "firewatch/v1/changes/inst-1"
    assert parse_change("firewatch/v1/changes/inst-1", notice.to_bytes()) == notice
    with pytest.raises(InvalidPayload, match="arrived on topic"):
        parse_change("firewatch/v1/changes/inst-2", notice.to_bytes())


def test_a_resync_notice_has_a_topic_no_institution_can_have():
    resync = ChangeNotice(kind=ChangeKind.RESYNC, institution_id="")
    assert parse_change(change_topic(resync), resync.to_bytes()) == resync
    with pytest.raises(InvalidPayload, match="institution_id"):
        parse_change(change_topic(resync), b'{"schema": "firewatch.change/1", "kind": "device", '
                                           b'"institution_id": "_resync", "data": {}}')
    with pytest.raises(InvalidPayload, match="names no institution"):
        parse_change("firewatch/v1/changes/inst-1", b'{"schema": "firewatch.change/1", '
                     b'"kind": "resync", "institution_id": "inst-1"}')
