"""The gateway's durable outbox: sequence numbers and bounds that survive restarts."""

import asyncio
import json
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

from firewatch.contract import DeviceEvent, EventType
from gateway.outbox import ROWS_PER_INSERT, Outbox


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


def reading(device: int, poll: int):
    """What a poller hands the outbox: a (topic, payload) made once the seq is known."""
    def build(seq: int) -> tuple[str, bytes]:
        return f"firewatch/v1/readings/gw-1/dev-{device}", json.dumps(
            {"seq": seq, "device": device, "poll": poll}).encode()
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
    assert all(m["seq"] == seq for m, (seq, _, _) in zip(stored, rows))
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
        sys.executable, "-c", KILLED_GATEWAY, str(tmp_path / "outbox.db"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=Path(__file__).resolve().parents[1])
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
