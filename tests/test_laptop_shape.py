"""`firewatch up` as a process tree (firewatch.children): the alert service, ingest and the
gateways run as child processes of the one command; a child that dies is started again, and
neither Ctrl-C nor the parent's own death leaves one behind."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.support.stack import Stack

pytestmark = pytest.mark.timeout(180)


def children_of(parent: int) -> dict[str, int]:
    """The pid of each child of ``parent`` by the name `firewatch up` gave it."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"--child" in argv:
            found[argv[argv.index(b"--child") + 1].decode()] = int(entry.name)
    return found


def gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has stopped


def until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_killed_child_is_started_again_and_ctrl_c_stops_every_process(tmp_path):
    stack = Stack(tmp_path)
    stack.start()  # healthy once every child answers
    assert stack.process is not None
    parent = stack.process.pid
    first = children_of(parent)
    assert set(first) == {"broker", "alerts", "ingest", "gateway"}

    os.kill(first["alerts"], signal.SIGKILL)
    stack.wait_until(
        lambda: children_of(parent).get("alerts", first["alerts"]) != first["alerts"],
        60,
        "the alert service to be started again",
    )
    stack.wait_until(
        lambda: stack.get("/api/health")["services"]["tasks"]["tasks"]["alerts"]["restarts"] == 1,
        10,
        "the restart to be counted",
    )
    stack.wait_until(lambda: stack.get("/api/health")["status"] == "ok", 60, "it to answer again")
    second = children_of(parent)

    assert stack.stop(signal.SIGINT) == 0
    assert all(gone(pid) for pid in [*first.values(), *second.values()])
    log = stack.log.read_text()
    assert "[alerts] firewatch: stopping" in log and "[gateway] firewatch: stopping" in log


def test_the_children_stop_when_firewatch_up_itself_is_killed(tmp_path):
    stack = Stack(tmp_path)
    stack.start()
    assert stack.process is not None
    children = children_of(stack.process.pid)
    assert set(children) == {"broker", "alerts", "ingest", "gateway"}

    stack.process.kill()
    stack.process.wait(10)
    until(lambda: all(gone(pid) for pid in children.values()), 90, "the children to stop")
    assert "[alerts] firewatch: stopping" in stack.log.read_text()


def test_a_start_and_a_ctrl_c_never_report_the_embedded_broker_gone(tmp_path):
    """The broker starts as a child, in seconds, and stops last: nothing that uses it, in the
    children or in `firewatch up` itself, says on the way in or out that it is unreachable."""
    stack = Stack(tmp_path)
    stack.start()
    stack.wait_until(
        lambda: stack.get("/api/health")["services"]["changes"]["subscribed"],
        60,
        "the live pages to follow change notices",
    )

    assert stack.stop(signal.SIGINT) == 0
    log = stack.log.read_text()
    assert "[broker] firewatch: stopping" in log
    said = [line for line in log.splitlines() if "unreachable" in line or "lost the broker" in line]
    assert not said, said
