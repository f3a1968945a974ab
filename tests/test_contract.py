"""The wire contract: what every part accepts and rejects on the broker."""

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from firewatch.contract import (
    ChangeKind,
    ChangeNotice,
    DeviceEvent,
    DeviceKind,
    EventType,
    GatewayHeartbeat,
    InvalidPayload,
    ReadingBatch,
    ReadingBatchEncoder,
    change_topic,
    heartbeat_topic,
    parse_change,
    parse_message,
    readings_topic,
)


def batch(**changes) -> ReadingBatch:
    fields = dict(
        gateway_id="gw-1",
        seq=7,
        device_id="dev-1",
        institution_id="inst-1",
        kind="gas_detector",
        ts=datetime(2026, 11, 22, tzinfo=UTC),
        profile="generic-gas-lel",
        readings={"gas_concentration": 1.5},
        flags={"sensor_fault": False},
    )
    return ReadingBatch(**{**fields, **changes})


def test_a_batch_survives_the_trip_through_bytes():
    original = batch()
    assert parse_message(readings_topic("gw-1", "dev-1"), original.to_bytes()) == original


@pytest.mark.parametrize("kind", list(EventType))
def test_an_event_is_told_apart_from_a_batch_by_its_schema(kind):
    event = DeviceEvent(
        gateway_id="gw-1",
        seq=8,
        device_id="dev-1",
        institution_id="inst-1",
        kind="gas_detector",
        ts=datetime.now(UTC),
        event=kind,
        reason="异常应答 exception code 4",
    )
    parsed = parse_message("firewatch/v1/events/gw-1/dev-1", event.to_bytes())
    assert isinstance(parsed, DeviceEvent) and parsed == event


def test_a_heartbeat_travels_on_its_gateways_topic():
    beat = GatewayHeartbeat(
        gateway_id="gw-1", incarnation="0123456789abcdef", seq=9, ts=datetime.now(UTC), outbox=3
    )
    assert heartbeat_topic("gw-1") == "firewatch/v1/heartbeats/gw-1"
    assert parse_message(heartbeat_topic("gw-1"), beat.to_bytes()) == beat
    with pytest.raises(InvalidPayload, match="arrived on topic"):
        parse_message(heartbeat_topic("gw-2"), beat.to_bytes())


def test_a_message_names_the_incarnation_of_the_outbox_it_came_from():
    fresh = batch(incarnation="0123456789abcdef")
    assert parse_message(readings_topic("gw-1", "dev-1"), fresh.to_bytes()) == fresh
    # a message from an outbox made before incarnations existed belongs to the stream ""
    assert parse_message(readings_topic("gw-1", "dev-1"), batch().to_bytes()).incarnation == ""
    with pytest.raises(InvalidPayload, match="incarnation"):
        parse_message(
            readings_topic("gw-1", "dev-1"),
            batch().to_bytes().replace(b'"incarnation":""', b'"incarnation":"x;drop"'),
        )


def test_a_payload_on_another_devices_topic_is_rejected():
    with pytest.raises(InvalidPayload, match="arrived on topic"):
        parse_message(readings_topic("gw-1", "dev-2"), batch().to_bytes())


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"not json", "Invalid JSON"),
        (b'{"schema": "firewatch.readings/9"}', "schema"),
        (batch().to_bytes().replace(b'"seq":7', b'"seq":0'), "seq"),
        (
            batch().to_bytes().replace(b'"gas_concentration":1.5', b'"gas_concentration":"high"'),
            "readings.gas_concentration",
        ),
        # a name that is no field name would break the line protocol ingest writes
        (
            batch().to_bytes().replace(b'"gas_concentration":1.5', b'"gas level,x=1":1.5'),
            "readings.gas level,x=1",
        ),
        (
            batch().to_bytes().replace(b'"sensor_fault":false', b'"sensor_fault":"y"'),
            "flags.sensor_fault",
        ),
    ],
)
def test_a_broken_payload_is_rejected_with_a_reason_naming_the_field(payload, reason):
    with pytest.raises(InvalidPayload) as err:
        parse_message(readings_topic("gw-1", "dev-1"), payload)
    assert reason in err.value.reason


def test_a_change_notice_arrives_on_its_institutions_topic_and_one_on_another_is_refused():
    notice = ChangeNotice(
        kind=ChangeKind.DEVICE, institution_id="inst-1", data={"id": "dev-1", "state": "alarm"}
    )
    assert change_topic(notice) == "firewatch/v1/changes/inst-1"
    assert parse_change("firewatch/v1/changes/inst-1", notice.to_bytes()) == notice
    with pytest.raises(InvalidPayload, match="arrived on topic"):
        parse_change("firewatch/v1/changes/inst-2", notice.to_bytes())


def test_a_resync_notice_has_a_topic_no_institution_can_have():
    resync = ChangeNotice(kind=ChangeKind.RESYNC, institution_id="")
    assert parse_change(change_topic(resync), resync.to_bytes()) == resync
    with pytest.raises(InvalidPayload, match="institution_id"):
        parse_change(
            change_topic(resync),
            b'{"schema": "firewatch.change/1", "kind": "device", '
            b'"institution_id": "_resync", "data": {}}',
        )
    with pytest.raises(InvalidPayload, match="names no institution"):
        parse_change(
            "firewatch/v1/changes/inst-1",
            b'{"schema": "firewatch.change/1", "kind": "resync", "institution_id": "inst-1"}',
        )


def gas_encoder() -> ReadingBatchEncoder:
    return ReadingBatchEncoder(
        "gw-1", "dev-1", "inst-1", DeviceKind.GAS_DETECTOR, "generic-gas-lel"
    )


def encoded(
    encoder: ReadingBatchEncoder, seq: int, ts: datetime, readings: dict, flags: dict
) -> bytes:
    return encoder.encode(seq, ts, *ReadingBatchEncoder.members(readings, flags))


@pytest.mark.parametrize(
    ("readings", "flags", "ts"),
    [
        (
            {"gas_concentration": 1.5, "cable_temp_1": -12.3, "residual_current": 42.0},
            {"sensor_fault": False, "low_alarm": True},
            datetime(2026, 11, 22, 8, 30, 1, 250, UTC),
        ),
        (
            {"tiny": 1e-6, "huge": 1e17, "zero": -0.0, "whole": 3},
            {},
            datetime(2026, 1, 1, tzinfo=UTC),
        ),
        ({}, {}, datetime(2026, 11, 22, 16, 30, tzinfo=timezone(timedelta(hours=8)))),
    ],
)
def test_a_batch_the_gateway_builds_without_the_model_is_the_models_json(readings, flags, ts):
    encoder = gas_encoder()
    payload = encoded(encoder, 7, ts, readings, flags)
    model = batch(readings=readings, flags=flags, ts=ts)
    assert json.loads(payload) == json.loads(model.to_bytes())
    assert parse_message(encoder.topic, payload) == model
    assert encoder.topic == readings_topic("gw-1", "dev-1")


def test_a_batch_of_plain_decimals_is_byte_for_byte_the_models():
    readings, flags = {"gas_concentration": 12.5, "residual_current": 0.0}, {"sensor_fault": True}
    ts = datetime(2026, 11, 22, 8, 30, 1, 123456, UTC)
    assert (
        encoded(gas_encoder(), 9, ts, readings, flags)
        == batch(seq=9, readings=readings, flags=flags, ts=ts).to_bytes()
    )


@pytest.mark.parametrize(
    ("seq", "readings", "flags", "ts"),
    [
        (7, {"gas_concentration": float("nan")}, {}, datetime.now(UTC)),
        (7, {"gas_concentration": float("inf")}, {}, datetime.now(UTC)),
        (7, {"gas_concentration": "twelve"}, {}, datetime.now(UTC)),
        (7, {}, {"sensor_fault": 1}, datetime.now(UTC)),
        (7, {"Gas": 1.0}, {}, datetime.now(UTC)),
        (7, {}, {}, datetime(2026, 11, 22)),
        (0, {}, {}, datetime.now(UTC)),
    ],
)
def test_the_gateways_batch_builder_refuses_what_the_model_refuses(seq, readings, flags, ts):
    with pytest.raises(ValidationError):
        batch(seq=seq, readings=readings, flags=flags, ts=ts)
    with pytest.raises(ValueError):
        encoded(gas_encoder(), seq, ts, readings, flags)


def test_devices_of_one_model_at_one_institution_each_get_batches_naming_themselves():
    """Their encoders share one layout; the device id is each batch's own."""
    readings, flags = {"gas_concentration": 3.5}, {"sensor_fault": False}
    ts = datetime(2026, 11, 22, 8, 30, 1, 5, UTC)
    encoders = {
        device: ReadingBatchEncoder(
            "gw-1", device, "inst-1", DeviceKind.GAS_DETECTOR, "generic-gas-lel"
        )
        for device in ("dev-1", "dev-2", "gw-1")
    }
    for seq, (device, encoder) in enumerate([*encoders.items(), *encoders.items()], start=1):
        assert (
            encoded(encoder, seq, ts, readings, flags)
            == batch(seq=seq, device_id=device, readings=readings, flags=flags, ts=ts).to_bytes()
        )
        assert encoder.topic == readings_topic("gw-1", device)


def test_batches_stamped_one_after_another_each_carry_their_own_time():
    """The last time formatted is reused only for that very time, not for an equal instant
    written in another zone, nor for the next microsecond."""
    readings, flags = {"gas_concentration": 1.0}, {}
    utc = datetime(2026, 11, 22, 8, 30, 1, 999999, UTC)
    in_beijing = utc.astimezone(timezone(timedelta(hours=8)))
    times = [utc, utc, in_beijing, utc + timedelta(microseconds=1), utc]
    encoder = gas_encoder()
    for ts in times:
        assert (
            encoded(encoder, 7, ts, readings, flags)
            == batch(readings=readings, flags=flags, ts=ts).to_bytes()
        )
