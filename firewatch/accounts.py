"""Console accounts: roles, hashed passwords, the demo accounts, and production's refusals.

Kept apart from the web layer because `firewatch up` (demo accounts, start-up checks) and the
`firewatch user` command use it too.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum

from pwdlib import PasswordHash
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from firewatch.db import Institution, User
from firewatch.settings import DEFAULT_SECRET_KEY, Settings

PRINTED_ACCOUNTS = 12  # a large site has hundreds of institutions: print the first few

#: Argon2id with pwdlib's recommended parameters (the hashing FastAPI's security docs show)
PASSWORDS = PasswordHash.recommended()


class Role(StrEnum):
    ADMIN = "admin"  # 局管理员: everything, every institution
    VIEWER = "viewer"  # 局查看: reads every institution, changes nothing
    STAFF = "staff"  # 机构值班人员: their own institution only
    TESTER = "tester"  # 测试员: reads everything, drives the simulators


ROLE_ZH = {Role.ADMIN: "局管理员", Role.VIEWER: "局查看人员", Role.STAFF: "机构值班人员",
           Role.TESTER: "测试员"}


class StartupRefused(SystemExit):
    """Production mode found a default secret; the message says what to change."""


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

    One hash serves every demo account: they share a published password anyway, and hashing
    per account would cost a tenth of a second for each institution of a large site.
    """
    password_hash = PASSWORDS.hash(password)
    async with sessions.begin() as session:
        institutions = list(await session.scalars(select(Institution).order_by(Institution.id)))
        existing = set(await session.scalars(select(User.username)))
        accounts = demo_accounts(institutions)
        for a in accounts:
            if a.username not in existing:
                session.add(User(username=a.username, display_name=a.display_name, role=a.role,
                                 institution_id=a.institution_id, password_hash=password_hash,
                                 demo=True))
    return accounts


async def add_user(sessions: async_sessionmaker, username: str, password: str, role: Role,
                   display_name: str, institution_id: str | None = None) -> None:
    if (role is Role.STAFF) != (institution_id is not None):
        raise ValueError("duty staff (and only they) belong to an institution")
    if len(password) < 10:
        raise ValueError("a password needs at least 10 characters")
    async with sessions.begin() as session:
        if institution_id is not None and await session.get(Institution, institution_id) is None:
            raise ValueError(f"no institution {institution_id!r}")
        if await session.get(User, username) is not None:
            raise ValueError(f"user {username!r} exists")
        session.add(User(username=username, display_name=display_name, role=role,
                         institution_id=institution_id, password_hash=PASSWORDS.hash(password)))


async def remove_demo_accounts(sessions: async_sessionmaker) -> list[str]:
    async with sessions.begin() as session:
        users = list(await session.scalars(select(User).where(User.demo.is_(True))))
        for user in users:
            await session.delete(user)
    return [u.username for u in users]


async def authenticate(sessions: async_sessionmaker, username: str, password: str) -> User | None:
    async with sessions() as session:
        user = await session.get(User, username)
    # Argon2 takes ~0.1 s of CPU: off the event loop.  An unknown name costs the same time,
    # so timing does not tell who exists.
    if user is None:
        await asyncio.to_thread(PASSWORDS.hash, password)
        return None
    valid = await asyncio.to_thread(PASSWORDS.verify, password, user.password_hash)
    return user if valid else None


async def refuse_default_secrets(settings: Settings, sessions: async_sessionmaker) -> None:
    """In production, stop before serving anything signed or guarded by a published secret."""
    if settings.env != "production":
        return
    if settings.secret_key == DEFAULT_SECRET_KEY or len(settings.secret_key) < 32:
        raise StartupRefused(
            "firewatch: production mode refuses the default or a short FIREWATCH_SECRET_KEY; "
            "set 32+ random characters (e.g. `python -c 'import secrets; "
            "print(secrets.token_urlsafe(48))'`)")
    async with sessions() as session:
        demo = list(await session.scalars(select(User.username).where(User.demo.is_(True))))
    if demo:
        raise StartupRefused(
            f"firewatch: production mode refuses demo accounts with the published password "
            f"({', '.join(sorted(demo))}); remove them with `firewatch user remove-demo` and add "
            f"real ones with `firewatch user add`")


async def prepare_accounts(settings: Settings, sessions: async_sessionmaker) -> None:
    """At start-up: refuse published secrets in production, else create and print the demo
    accounts where the person who ran the command looks (stdout)."""
    await refuse_default_secrets(settings, sessions)
    if settings.env == "production":
        return
    accounts = await ensure_demo_accounts(sessions, settings.demo_password)
    lines = [f"Demo accounts (password: {settings.demo_password}; "
             "production mode refuses them):"]
    shown = accounts[:PRINTED_ACCOUNTS]
    for a in shown:
        where = f"  {a.institution_id}" if a.institution_id else ""
        lines.append(f"  {a.username:<30} {ROLE_ZH[a.role]}{where}")
    if len(accounts) > len(shown):
        lines.append(f"  … and {len(accounts) - len(shown)} more duty-<institution id>")
    print("\n".join(lines), flush=True)
