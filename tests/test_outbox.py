"""The gateway's durable outbox: sequence numbers and bounds that survive restarts."""

import asyncio
import json
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from firewatch.contract import DeviceEvent, EventType, GatewayHeartbeat, ReadingBatch
from gateway.outbox import ROWS_PER_INSERT, Keep, Outbox


def event(seq: int) -> DeviceEvent:
    return DeviceEvent(
        gateway_id="gw-1",
        seq=seq,
        device_id="dev-1",
        institution_id="inst-1",
        kind="gas_detector",
        ts=datetime.now(UTC),
        event=EventType.ONLINE,
    )


def button(seq: int, pressed: bool = False, battery: float = 3.0) -> ReadingBatch:
    return ReadingBatch(
        gateway_id="gw-1",
        seq=seq,
        device_id="btn-1",
        institution_id="inst-1",
        kind="one_key_alarm",
        ts=datetime.now(UTC),
        profile="generic-onekey-mqtt",
        readings={"battery_voltage": battery},
        flags={"button_pressed": pressed},
    )


def routine(seq: int) -> ReadingBatch:
    return button(seq)


def heartbeat(seq: int) -> GatewayHeartbeat:
    return GatewayHeartbeat(gateway_id="gw-1", seq=seq, ts=datetime.now(UTC))


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
        await outbox.put(routine)
    assert outbox.dropped_by_kind == {"reading": 2}
    assert outbox.size == 3
    assert [seq for seq, _, _ in await outbox.oldest(10)] == [3, 4, 5]
    await outbox.close()


async def test_messages_being_published_are_not_dropped_and_counted_when_the_outbox_is_full(
    tmp_path,
):
    outbox = Outbox(tmp_path / "outbox.db", max_messages=3)
    await outbox.open()
    for _ in range(3):
        await outbox.put(routine)
    assert [seq for seq, _, _ in await outbox.oldest(10)] == [1, 2, 3]  # handed to the broker
    await outbox.put(routine)
    assert (outbox.dropped, outbox.size) == (0, 4)

    outbox.publishing_stopped()  # the broker went away before acknowledging them
    await outbox.put(routine)
    assert (outbox.dropped, outbox.size) == (2, 3)
    assert [seq for seq, _, _ in await outbox.oldest(10)] == [3, 4, 5]
    await outbox.close()


def reading(device: int, poll: int):
    """What a poller hands the outbox: a (topic, payload) made once the seq is known."""

    def build(seq: int) -> tuple[str, bytes]:
        return f"firewatch/v1/readings/gw-1/dev-{device}", json.dumps(
            {"seq": seq, "device": device, "poll": poll}
        ).encode()

    return build


async def test_polls_finishing_together_are_committed_together_in_the_order_they_were_read(
    tmp_path,
):
    outbox = Outbox(tmp_path / "outbox.db")
    await outbox.open()
    order = [(device, poll) for poll in range(10) for device in range(8)]
    futures = [outbox.submit(reading(device, poll)) for device, poll in order]
    assert len(set(futures)) == 1  # one transaction, one future for all of them
    await asyncio.gather(*futures)
    later = outbox.submit(reading(0, 10))
    assert later is not futures[0]
    await later
    rows = await outbox.oldest(1000)
    await outbox.close()
    assert [seq for seq, _, _ in rows] == list(range(1, 82))
    stored = [json.loads(payload) for _, _, payload in rows]
    assert [(m["device"], m["poll"]) for m in stored] == [*order, (0, 10)]
    assert all(m["seq"] == seq for m, (seq, _, _) in zip(stored, rows, strict=True))
    assert rows[3][1] == "firewatch/v1/readings/gw-1/dev-3"


async def test_more_polls_than_one_statement_takes_are_committed_at_once_and_in_order(tmp_path):
    outbox = Outbox(tmp_path / "outbox.db")
    await outbox.open()
    order = [(device, poll) for poll in range(5) for device in range(ROWS_PER_INSERT // 2 + 7)]
    futures = [outbox.submit(reading(device, poll)) for device, poll in order]
    assert len(set(futures)) == 1
    await futures[0]
    rows = await outbox.oldest(len(order) + 1)
    await outbox.close()
    assert [seq for seq, _, _ in rows] == list(range(1, len(order) + 1))
    assert [(m["device"], m["poll"]) for m in map(json.loads, (p for _, _, p in rows))] == order
    assert rows[-1][1] == f"firewatch/v1/readings/gw-1/dev-{order[-1][0]}"


KILLED_GATEWAY = textwrap.dedent("""
    import asyncio, os, signal, sys
    from pathlib import Path
    from tests.test_outbox import reading
    from gateway.outbox import Outbox

    async def main():
        outbox = Outbox(Path(sys.argv[1]))
        await outbox.open()
        async def poller(device):  # like an EndpointPoller: many polls in flight at once
            for poll in range(50):
                await outbox.submit(reading(device, poll))
        await asyncio.gather(*(poller(d) for d in range(10)))
        print(outbox.last_seq, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # no close(): the process dies as in a crash

    asyncio.run(main())
""")


async def test_every_batch_whose_commit_was_confirmed_is_there_after_the_gateway_is_killed(
    tmp_path,
):
    gateway = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        KILLED_GATEWAY,
        str(tmp_path / "outbox.db"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
    )
    stdout, stderr = await asyncio.wait_for(gateway.communicate(), 60)
    assert gateway.returncode == -signal.SIGKILL, stderr.decode()
    assert int(stdout) == 500

    reopened = Outbox(tmp_path / "outbox.db")
    await reopened.open()
    rows = await reopened.oldest(1000)
    assert [seq for seq, _, _ in rows] == list(range(1, 501))
    polls = {}
    for _, _, payload in rows:
        message = json.loads(payload)
        polls.setdefault(message["device"], []).append(message["poll"])
    assert polls == {device: list(range(50)) for device in range(10)}
    assert (await reopened.put(event)).seq == 501
    await reopened.close()


async def test_the_outbox_at_its_bound_keeps_the_presses_events_and_readings_at_a_set_point(
    tmp_path,
):
    keep = Keep({"btn-1": {"battery_voltage": 10.0}})  # a set point a reading can reach
    outbox = Outbox(tmp_path / "outbox.db", max_messages=4, keep=keep)
    await outbox.open()
    kept = [
        (await outbox.put(lambda seq: button(seq, pressed=True))).seq,
        (await outbox.put(event)).seq,
        (await outbox.put(lambda seq: button(seq, battery=12.5))).seq,
    ]
    for _ in range(20):  # a long broker outage: routine polls and heartbeats keep coming
        await outbox.put(routine)
        await outbox.put(heartbeat)
    kept.append((await outbox.put(lambda seq: button(seq, pressed=True))).seq)
    rows = await outbox.oldest(100)
    await outbox.close()
    assert [seq for seq, _, _ in rows][:4] == kept
    assert outbox.size == len(rows) == 4  # the press took the place of the newest routine one
    assert outbox.dropped_by_kind == {"reading": 20, "heartbeat": 20}


async def test_an_outbox_of_nothing_but_presses_grows_past_its_bound_rather_than_lose_one(
    tmp_path,
):
    outbox = Outbox(tmp_path / "outbox.db", max_messages=2)
    await outbox.open()
    for _ in range(5):
        await outbox.put(lambda seq: button(seq, pressed=True))
    assert (outbox.size, outbox.dropped) == (5, 0)
    await outbox.close()


async def test_a_new_outbox_file_is_a_new_incarnation_and_an_old_one_keeps_its_own(tmp_path):
    outbox = Outbox(tmp_path / "outbox.db")
    await outbox.open()
    first = outbox.incarnation
    await outbox.put(event)
    await outbox.close()
    assert len(first) == 16 and int(first, 16) >= 0

    reopened = Outbox(tmp_path / "outbox.db")
    await reopened.open()
    assert reopened.incarnation == first and (await reopened.put(event)).seq == 2
    await reopened.close()

    for name in ("outbox.db", "outbox.db-wal", "outbox.db-shm"):  # a new SD card
        (tmp_path / name).unlink(missing_ok=True)
    replaced = Outbox(tmp_path / "outbox.db")
    await replaced.open()
    assert replaced.incarnation != first and (await replaced.put(event)).seq == 1
    await replaced.close()


async def test_an_outbox_from_before_incarnations_gets_one_and_keeps_its_messages(tmp_path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "outbox.db")
    db.execute(
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,"
        " payload BLOB NOT NULL)"
    )
    db.execute(
        "INSERT INTO outbox (topic, payload) VALUES (?, ?)",
        ("firewatch/v1/readings/gw-1/btn-1", routine(1).to_bytes()),
    )
    db.commit()
    db.close()
    outbox = Outbox(tmp_path / "outbox.db", max_messages=1)
    await outbox.open()
    assert len(outbox.incarnation) == 16
    assert (await outbox.put(lambda seq: button(seq, pressed=True))).seq == 2
    assert [seq for seq, _, _ in await outbox.oldest(10)] == [2]  # the old routine one shed
    await outbox.close()


@pytest.mark.parametrize("payload", [b"{", b"[]", b'{"flags": 3}', b'{"readings": {"x": "y"}}'])
def test_a_reading_row_that_cannot_be_read_is_kept(payload):
    keep = Keep({"btn-1": {"x": 1.0}})
    assert keep("firewatch/v1/readings/gw-1/btn-1", payload) is True
