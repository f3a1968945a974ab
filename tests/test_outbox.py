"""The gateway's durable outbox: sequence numbers and bounds that survive restarts."""

from datetime import UTC, datetime

from firewatch.contract import DeviceEvent, EventType
from gateway.outbox import Outbox


def event(seq: int) -> DeviceEvent:
    return DeviceEvent(gateway_id="gw-1", seq=seq, device_id="dev-1", institution_id="inst-1",
                       kind="gas_detector", ts=datetime.now(UTC), event=EventType.ONLINE)


async def test_sequence_numbers_keep_rising_after_everything_was_sent_and_the_gateway_restarted(
    tmp_path,
):
    outbox = Outbox(tmp_path / "outbox.db")
    await outbox.open()
    for _ in range(3):
        await outbox.put(event)
    await outbox.acknowledge(3)
    await outbox.close()

    reopened = Outbox(tmp_path / "outbox.db")
    await reopened.open()
    message = await reopened.put(event)
    assert message.seq == 4
    assert [seq for seq, _, _ in await reopened.oldest(10)] == [4]
    await reopened.close()


async def test_unacknowledged_messages_wait_in_order_across_a_restart(tmp_path):
    outbox = Outbox(tmp_path / "outbox.db")
    await outbox.open()
    for _ in range(5):
        await outbox.put(event)
    await outbox.acknowledge(2)
    await outbox.close()

    reopened = Outbox(tmp_path / "outbox.db")
    await reopened.open()
    rows = await reopened.oldest(10)
    assert [seq for seq, _, _ in rows] == [3, 4, 5]
    assert rows[0][1] == "firewatch/v1/events/gw-1/dev-1"
    await reopened.close()


async def test_a_full_outbox_drops_the_oldest_messages_and_counts_them(tmp_path):
    outbox = Outbox(tmp_path / "outbox.db", max_messages=3)
    await outbox.open()
    for _ in range(5):
        await outbox.put(event)
    assert outbox.dropped == 2
    assert outbox.size == 3
    assert [seq for seq, _, _ in await outbox.oldest(10)] == [3, 4, 5]
    await outbox.close()


async def test_messages_being_published_are_not_dropped_and_counted_when_the_outbox_is_full(
    tmp_path,
):
    outbox = Outbox(tmp_path / "outbox.db", max_messages=3)
    await outbox.open()
    for _ in range(3):
        await outbox.put(event)
    assert [seq for seq, _, _ in await outbox.oldest(10)] == [1, 2, 3]  # handed to the broker
    await outbox.put(event)
    assert (outbox.dropped, outbox.size) == (0, 4)

    outbox.publishing_stopped()  # the broker went away before acknowledging them
    await outbox.put(event)
    assert (outbox.dropped, outbox.size) == (2, 3)
    assert [seq for seq, _, _ in await outbox.oldest(10)] == [3, 4, 5]
    await outbox.close()
