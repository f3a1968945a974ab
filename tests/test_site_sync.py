"""The site file into the database at each start: what the file says is taken, what the
devices did is kept."""

from __future__ import annotations

from sqlalchemy import select

from firewatch import db
from firewatch.stack import sync_site
from tests.support.alerts import PROFILES, SITE, database


async def test_an_edited_site_file_renames_the_institution_and_keeps_each_device_state(tmp_path):
    async with database(f"sqlite+aiosqlite:///{tmp_path}/fw.db") as sessions:
        async with sessions.begin() as session:
            device = await session.get_one(db.Device, "rc-gas-1")
            device.state, device.last_readings = "alarm", {"gas_concentration": 30.0}
        first = SITE.institutions[0]
        renamed = first.model_copy(update={"name": "蓉城镇中心敬老院"})
        moved = SITE.devices[0].model_copy(update={"location": "二楼配电间"})
        edited = SITE.model_copy(
            update={
                "institutions": [renamed, *SITE.institutions[1:]],
                "devices": [moved, *SITE.devices[1:]],
            }
        )

        await sync_site(sessions, edited, PROFILES)

        async with sessions() as session:
            institution = await session.get_one(db.Institution, first.id)
            gas = await session.get_one(db.Device, "rc-gas-1")
            relocated = await session.get_one(db.Device, SITE.devices[0].id)
            count = len((await session.scalars(select(db.Device))).all())
        assert institution.name == "蓉城镇中心敬老院"
        assert (gas.state, gas.last_readings) == ("alarm", {"gas_concentration": 30.0})
        assert relocated.location == "二楼配电间"
        assert count == len(SITE.devices)
