"""Console accounts: roles, hashed passwords, the demo accounts, and production's refusals.

Kept apart from the web layer because `firewatch up` (demo accounts, start-up checks) and the
`firewatch user` command use it too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from pwdlib import PasswordHash
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from firewatch.db import Institution, Marker, User
from firewatch.settings import DEFAULT_SECRET_KEY, Settings

PRINTED_ACCOUNTS = 12  # a large site has hundreds of institutions: print the first few

#: Argon2id with pwdlib's recommended parameters (the hashing FastAPI's security docs show)
PASSWORDS = PasswordHash.recommended()
#: set once `firewatch user remove-demo` ran: the demo accounts are never created again
DEMO_REMOVED = "demo-accounts-removed"
MIN_PASSWORD = 10
T = TypeVar("T")


class Role(StrEnum):
    ADMIN = "admin"  # 局管理员: everything, every institution
    VIEWER = "viewer"  # 局查看: reads every institution, changes nothing
    STAFF = "staff"  # 机构值班人员: their own institution only
    TESTER = "tester"  # 测试员: reads everything, drives the simulators


ROLE_ZH = {
    Role.ADMIN: "局管理员",
    Role.VIEWER: "局查看人员",
    Role.STAFF: "机构值班人员",
    Role.TESTER: "测试员",
}


class StartupRefused(SystemExit):
    """Production mode found a default secret; the message says what to change."""


class HashingBusy(Exception):
    """More password checks are waiting than the hashing pool takes: answer "try again"."""


class PasswordWork:
    """Argon2 (~0.1 s of CPU each) on a small pool of its own with a bounded queue.

    Not the event loop, and not the default executor that ``asyncio.to_thread`` shares with
    the rest of the app (exports, file reads): a flood of logins then waits here, or is
    refused at once once ``waiting`` checks are queued, while the API goes on answering.
    """

    def __init__(self, workers: int = 2, waiting: int = 32) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")
        self._limit = workers + waiting
        self._queued = 0  # touched on the event loop only

    async def run(self, work: Callable[..., T], *args: object) -> T:
        if self._queued >= self._limit:
            raise HashingBusy()
        self._queued += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, work, *args)
        finally:
            self._queued -= 1


@dataclass(frozen=True)
class DemoAccount:
    username: str
    role: Role
    display_name: str
    institution_id: str | None = None


def demo_accounts(institutions: list[Institution]) -> list[DemoAccount]:
    """One account per role, and duty staff for every institution."""
    return [
        DemoAccount("admin", Role.ADMIN, "县民政局管理员（演示）"),
        DemoAccount("viewer", Role.VIEWER, "县民政局查看员（演示）"),
        DemoAccount("tester", Role.TESTER, "测试员（演示）"),
        *(DemoAccount(f"duty-{i.id}", Role.STAFF, f"{i.name}值班员", i.id) for i in institutions),
    ]


async def ensure_demo_accounts(sessions: async_sessionmaker, password: str) -> list[DemoAccount]:
    """Create the demo accounts that are missing; existing accounts keep their passwords.
    None once they were removed (`firewatch user remove-demo`), on any later start.

    One hash serves every demo account: they share a published password anyway, and hashing
    per account would cost a tenth of a second for each institution of a large site.
    """
    async with sessions() as session:
        if await session.get(Marker, DEMO_REMOVED) is not None:
            return []
    password_hash = PASSWORDS.hash(password)
    async with sessions.begin() as session:
        institutions = list(await session.scalars(select(Institution).order_by(Institution.id)))
        existing = set(await session.scalars(select(User.username)))
        accounts = demo_accounts(institutions)
        for a in accounts:
            if a.username not in existing:
                session.add(
                    User(
                        username=a.username,
                        display_name=a.display_name,
                        role=a.role,
                        institution_id=a.institution_id,
                        password_hash=password_hash,
                        demo=True,
                    )
                )
    return accounts


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a password needs at least {MIN_PASSWORD} characters")


async def _check_role(session: AsyncSession, role: Role, institution_id: str | None) -> None:
    if (role is Role.STAFF) != (institution_id is not None):
        raise ValueError("duty staff (and only they) belong to an institution")
    if institution_id is not None and await session.get(Institution, institution_id) is None:
        raise ValueError(f"no institution {institution_id!r}")


async def add_user(
    sessions: async_sessionmaker,
    username: str,
    password: str,
    role: Role,
    display_name: str,
    institution_id: str | None = None,
) -> None:
    _check_password(password)
    async with sessions.begin() as session:
        await _check_role(session, role, institution_id)
        if await session.get(User, username) is not None:
            raise ValueError(f"user {username!r} exists")
        session.add(
            User(
                username=username,
                display_name=display_name,
                role=role,
                institution_id=institution_id,
                password_hash=PASSWORDS.hash(password),
            )
        )


async def _existing(session: AsyncSession, username: str) -> User:
    user = await session.get(User, username)
    if user is None:
        raise ValueError(f"no user {username!r}")
    return user


async def set_disabled(sessions: async_sessionmaker, username: str, disabled: bool) -> None:
    """A disabled account cannot log in, and its tokens stop working at their next request."""
    async with sessions.begin() as session:
        (await _existing(session, username)).disabled = disabled


async def set_password(sessions: async_sessionmaker, username: str, password: str) -> None:
    """A new password, which ends every login made with the old one (a leaked password's
    sessions too); a demo account given one is no longer a demo account."""
    _check_password(password)
    async with sessions.begin() as session:
        user = await _existing(session, username)
        user.password_hash, user.demo = PASSWORDS.hash(password), False
        user.token_generation += 1


async def set_role(
    sessions: async_sessionmaker, username: str, role: Role, institution_id: str | None = None
) -> None:
    """Takes effect at the account's next request: every request reads the account."""
    async with sessions.begin() as session:
        user = await _existing(session, username)
        await _check_role(session, role, institution_id)
        user.role, user.institution_id = role, institution_id


async def list_users(sessions: async_sessionmaker) -> list[User]:
    async with sessions() as session:
        return list(await session.scalars(select(User).order_by(User.username)))


async def remove_demo_accounts(sessions: async_sessionmaker) -> list[str]:
    """Delete the demo accounts, and record that they were removed so no start recreates them."""
    async with sessions.begin() as session:
        users = list(await session.scalars(select(User).where(User.demo.is_(True))))
        for user in users:
            await session.delete(user)
        if await session.get(Marker, DEMO_REMOVED) is None:
            session.add(Marker(name=DEMO_REMOVED))
    return [u.username for u in users]


async def authenticate(
    sessions: async_sessionmaker, hashing: PasswordWork, username: str, password: str
) -> User | None:
    """The account, if the password is its own and it is not disabled.  An unknown name
    costs the same hashing time, so timing does not tell who exists."""
    async with sessions() as session:
        user = await session.get(User, username)
    if user is None:
        await hashing.run(PASSWORDS.hash, password)
        return None
    valid = await hashing.run(PASSWORDS.verify, password, user.password_hash)
    return user if valid and not user.disabled else None


async def refuse_default_secrets(settings: Settings, sessions: async_sessionmaker) -> None:
    """In production, stop before serving anything signed or guarded by a published secret."""
    if settings.env != "production":
        return
    if settings.secret_key == DEFAULT_SECRET_KEY or len(settings.secret_key) < 32:
        raise StartupRefused(
            "firewatch: production mode refuses the default or a short FIREWATCH_SECRET_KEY; "
            "set 32+ random characters (e.g. `python -c 'import secrets; "
            "print(secrets.token_urlsafe(48))'`)"
        )
    if settings.confirm_link_secret is None:
        raise StartupRefused(
            "firewatch: production mode needs FIREWATCH_CONFIRM_LINK_SECRET (32+ random "
            "characters, the same for the alert and web services): it signs the one-tap "
            "confirmation links in notices"
        )
    async with sessions() as session:
        demo = list(await session.scalars(select(User.username).where(User.demo.is_(True))))
    if demo:
        raise StartupRefused(
            f"firewatch: production mode refuses demo accounts with the published password "
            f"({', '.join(sorted(demo))}); remove them with `firewatch user remove-demo` and add "
            f"real ones with `firewatch user add`"
        )


async def prepare_accounts(settings: Settings, sessions: async_sessionmaker) -> None:
    """At start-up: refuse published secrets in production, else create and print the demo
    accounts where the person who ran the command looks (stdout)."""
    await refuse_default_secrets(settings, sessions)
    if settings.env == "production":
        return
    accounts = await ensure_demo_accounts(sessions, settings.demo_password)
    if not accounts:
        print(
            "Demo accounts: removed for good (`firewatch user remove-demo`); log in with the "
            "accounts made by `firewatch user add`.",
            flush=True,
        )
        return
    lines = [f"Demo accounts (password: {settings.demo_password}; production mode refuses them):"]
    shown = accounts[:PRINTED_ACCOUNTS]
    for a in shown:
        where = f"  {a.institution_id}" if a.institution_id else ""
        lines.append(f"  {a.username:<30} {ROLE_ZH[a.role]}{where}")
    if len(accounts) > len(shown):
        lines.append(f"  … and {len(accounts) - len(shown)} more duty-<institution id>")
    print("\n".join(lines), flush=True)
