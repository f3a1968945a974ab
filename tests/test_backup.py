"""`firewatch backup` / `firewatch restore`, as an operator runs them: a backup taken while the
demo runs comes back in a new data dir with its alarms, ledger and accounts."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from firewatch import db, migrations
from tests.support.auth import login
from tests.support.cli import firewatch
from tests.support.stack import Stack
from tests.test_migrations import walked_from_the_first_revision

OFFICER_PASSWORD = "备份-值班-2026"


def what_it_serves(stack: Stack) -> tuple[list, list, list]:
    """Its alarms and ledger (through the API) and its accounts (`firewatch user list`)."""
    # not their status: the restored demo's button reports normal again, which clears its alarm
    alarms = [
        (a["id"], a["device_id"], a["rule"], a["raised_at"]) for a in stack.get("/api/alarms")
    ]
    ledger = [
        (h["id"], h["device_id"], h["source"], h["description"]) for h in stack.get("/api/hazards")
    ]
    accounts_listed = firewatch("user", "list", "--data-dir", str(stack.data_dir))
    assert accounts_listed.returncode == 0, accounts_listed.stderr
    return alarms, ledger, accounts_listed.stdout.splitlines()


@pytest.fixture
def demo(tmp_path: Path):
    """The demo running, with a button pressed (an alarm and its ledger entry) and an account
    added by the operator."""
    stack = Stack(tmp_path / "data")
    stack.start()
    try:
        assert stack.simulate("rc-btn-1", "button-press").returncode == 0
        stack.wait_until(
            lambda: any(h["device_id"] == "rc-btn-1" for h in stack.get("/api/hazards")),
            30,
            "the button's alarm in the ledger",
        )
        added = firewatch(
            "user",
            "add",
            "backup-officer",
            "--role",
            "admin",
            "--data-dir",
            str(stack.data_dir),
            env={"FIREWATCH_PASSWORD": OFFICER_PASSWORD},
        )
        assert added.returncode == 0, added.stderr
        yield stack
    finally:
        if stack.process is not None:
            stack.stop()


def test_a_backup_taken_while_the_demo_runs_serves_the_same_ledger_alarms_and_accounts(
    demo,
    tmp_path,
):
    before = what_it_serves(demo)

    taken = firewatch("backup", str(tmp_path / "backup"), "--data-dir", str(demo.data_dir))
    assert taken.returncode == 0, taken.stderr
    demo.stop()
    restored = firewatch(
        "restore", str(tmp_path / "backup"), "--data-dir", str(tmp_path / "new-data")
    )
    assert restored.returncode == 0, restored.stderr

    again = Stack(tmp_path / "new-data")
    again.start()
    try:
        assert what_it_serves(again) == before
        assert any(alarm[1:3] == ("rc-btn-1", "one_key_alarm") for alarm in before[0])
        assert any(line.startswith("backup-officer ") for line in before[2])
        with httpx.Client(base_url=again.url, timeout=10) as officer:
            login(officer, "backup-officer", OFFICER_PASSWORD)
            assert officer.get("/api/hazards").status_code == 200
        with httpx.Client(base_url=again.url, timeout=10) as tester:
            login(tester, "tester")
    finally:
        again.stop()
    manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    assert manifest["alembic_revision"] == migrations.head()
    assert set(manifest["files"]) == {"firewatch.db", "timeseries.db"}
    assert "copying the relational database" in taken.stderr  # progress, on stderr
    assert taken.stdout.strip() == str(tmp_path / "backup")


def test_a_restore_refuses_a_data_dir_with_data_unless_forced(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    assert firewatch("user", "list", "--data-dir", str(data)).returncode == 0  # makes the db
    assert firewatch("backup", str(tmp_path / "backup"), "--data-dir", str(data)).returncode == 0

    refused = firewatch("restore", str(tmp_path / "backup"), "--data-dir", str(data))

    assert refused.returncode == 1
    assert "already hold data" in refused.stderr and "--force" in refused.stderr
    forced = firewatch("restore", str(tmp_path / "backup"), "--data-dir", str(data), "--force")
    assert forced.returncode == 0, forced.stderr


def test_a_backup_of_a_data_dir_without_a_database_says_which_dir_it_looked_in(tmp_path):
    done = firewatch("backup", str(tmp_path / "backup"), "--data-dir", str(tmp_path / "nothing"))

    assert done.returncode == 1
    assert f"no database at {tmp_path / 'nothing'}" in done.stderr and "--data-dir" in done.stderr
    assert "Traceback" not in done.stderr


async def test_a_postgresql_backup_restores_into_a_fresh_database(postgres, tmp_path):
    """pg_dump -Fc, then pg_restore into a database of its own: the ledger, the alarm and the
    account are there, read through the current models (the data of the migrations test)."""
    source, target = postgres.new_database(), postgres.new_database()
    await (await walked_from_the_first_revision(source)).dispose()

    env = {"FIREWATCH_DATABASE_URL": source}
    taken = firewatch(
        "backup", str(tmp_path / "backup"), "--data-dir", str(tmp_path / "a"), env=env
    )
    assert taken.returncode == 0, taken.stderr
    restored = firewatch(
        "restore",
        str(tmp_path / "backup"),
        "--data-dir",
        str(tmp_path / "b"),
        env={"FIREWATCH_DATABASE_URL": target},
    )
    assert restored.returncode == 0, restored.stderr

    engine = db.create_engine(target)
    try:
        await db.create_schema(engine)
        async with db.sessionmaker(engine)() as session:
            assert (await session.get(db.Alarm, 7)).title == "一键报警"
            assert (await session.get(db.Hazard, 3)).alarm_id == 7
            assert (await session.get(db.User, "duty-rc")).role == "staff"
    finally:
        await engine.dispose()
    again = firewatch(
        "restore",
        str(tmp_path / "backup"),
        "--data-dir",
        str(tmp_path / "b"),
        env={"FIREWATCH_DATABASE_URL": target},
    )
    assert again.returncode == 1 and f"PostgreSQL database {target.rsplit('/', 1)[1]}" in (
        again.stderr
    )
