"""Who may see and do what: login (OAuth2 password flow, signed bearer tokens) and scope.

The pattern is FastAPI's own (security docs: ``OAuth2PasswordBearer``, PyJWT, pwdlib).  Every
data route takes ``CurrentUser`` or ``require_roles(...)``, and restricts its query with
``scope()`` or checks a row with ``Principal.sees()``: duty staff see their own institution
only.  A row of another institution answers exactly like a missing one (404), so guessing ids
tells a staff member nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

import jwt
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.security import OAuth2PasswordBearer, OAuth2PasswordRequestForm
from pydantic import BaseModel
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import async_sessionmaker

from alerts.ledger import TRANSITIONS, Source
from firewatch.accounts import ROLE_ZH, Role, authenticate
from firewatch.contract import utc_now
from firewatch.db import User

ALGORITHM = "HS256"

#: ledger steps per role: institutions rectify, the bureau verifies, signs off and re-checks
HAZARD_ACTIONS: dict[Role, frozenset[str]] = {
    Role.ADMIN: frozenset(TRANSITIONS),
    Role.STAFF: frozenset({"start", "submit"}),
    Role.VIEWER: frozenset(),
    Role.TESTER: frozenset(),
}
#: who may file ledger entries by hand, from which channel
FILING_SOURCES: dict[Role, frozenset[Source]] = {
    Role.ADMIN: frozenset({Source.SELF_CHECK, Source.INSPECTION, Source.PUBLIC_REPORT}),
    Role.STAFF: frozenset({Source.SELF_CHECK}),
    Role.VIEWER: frozenset(),
    Role.TESTER: frozenset(),
}
ACKNOWLEDGERS = (Role.ADMIN, Role.STAFF)
OPERATORS = (Role.ADMIN, Role.TESTER)  # simulators, dead letters

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/auth/token")


@dataclass(frozen=True)
class AuthConfig:
    sessions: async_sessionmaker
    secret_key: str
    token_hours: float


@dataclass(frozen=True)
class Principal:
    username: str
    display_name: str
    role: Role
    institution_id: str | None  # None: bureau-wide

    def sees(self, institution_id: str | None) -> bool:
        return self.institution_id is None or institution_id == self.institution_id


def issue_token(config: AuthConfig, username: str) -> str:
    now = utc_now()
    claims = {"sub": username, "iat": now, "exp": now + timedelta(hours=config.token_hours)}
    return jwt.encode(claims, config.secret_key, algorithm=ALGORITHM)


_UNAUTHORIZED = {"status_code": 401, "headers": {"WWW-Authenticate": "Bearer"}}


async def current_user(request: Request, token: Annotated[str, Depends(oauth2_scheme)]) -> Principal:
    config: AuthConfig = request.app.state.auth
    try:
        claims = jwt.decode(token, config.secret_key, algorithms=[ALGORITHM],
                            options={"require": ["sub", "exp"]})
    except jwt.InvalidTokenError:
        raise HTTPException(detail="登录已失效，请重新登录 (invalid or expired token)",
                            **_UNAUTHORIZED) from None
    async with config.sessions() as session:
        user = await session.get(User, claims["sub"])
    if user is None:  # removed since the token was issued
        raise HTTPException(detail="账号不存在 (no such account)", **_UNAUTHORIZED)
    return Principal(user.username, user.display_name, Role(user.role), user.institution_id)


CurrentUser = Annotated[Principal, Depends(current_user)]


def require_roles(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency that lets only ``roles`` through (403 for the others)."""
    names = "、".join(ROLE_ZH[r] for r in roles)

    async def dependency(user: CurrentUser) -> Principal:
        if user.role not in roles:
            raise HTTPException(403, f"仅{names}可执行此操作 (role {user.role} may not)")
        return user

    return dependency


def scope(query: Select, user: Principal, institution_column: Any) -> Select:
    """Restrict ``query`` to the rows the user may see."""
    if user.institution_id is None:
        return query
    return query.where(institution_column == user.institution_id)


def own_institution(user: Principal, requested: str | None) -> str | None:
    """The institution a filtered query must keep to: duty staff get their own (asking for
    another answers 404, like any row they may not see); the bureau gets what it asked for."""
    if user.institution_id is None:
        return requested
    if requested not in (None, user.institution_id):
        raise HTTPException(404, f"no institution {requested!r}")
    return user.institution_id


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"


class PermissionsOut(BaseModel):
    acknowledge: bool
    simulate: bool
    dead_letters: bool
    hazard_actions: list[str]
    file_sources: list[str]


class MeOut(BaseModel):
    username: str
    display_name: str
    role: Role
    role_zh: str
    institution_id: str | None
    permissions: PermissionsOut


class TransitionOut(BaseModel):
    action: str
    sources: list[str]
    target: str
    label_zh: str


router = APIRouter(tags=["auth"])


@router.post("/api/auth/token", response_model=TokenOut)
async def login(request: Request,
                form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> TokenOut:
    config: AuthConfig = request.app.state.auth
    user = await authenticate(config.sessions, form.username, form.password)
    if user is None:
        raise HTTPException(detail="用户名或密码错误 (wrong user name or password)",
                            **_UNAUTHORIZED)
    return TokenOut(access_token=issue_token(config, user.username))


@router.get("/api/me", response_model=MeOut)
async def me(user: CurrentUser) -> MeOut:
    return MeOut(
        username=user.username, display_name=user.display_name, role=user.role,
        role_zh=ROLE_ZH[user.role], institution_id=user.institution_id,
        permissions=PermissionsOut(
            acknowledge=user.role in ACKNOWLEDGERS,
            simulate=user.role in OPERATORS,
            dead_letters=user.role in OPERATORS,
            hazard_actions=sorted(HAZARD_ACTIONS[user.role]),
            file_sources=sorted(FILING_SOURCES[user.role]),
        ),
    )


@router.get("/api/hazards/transitions", response_model=list[TransitionOut])
async def transitions(_user: CurrentUser) -> list[TransitionOut]:
    """The ledger's status flow, so pages offer only the steps that fit an entry's status."""
    return [TransitionOut(action=a, sources=list(t.sources), target=t.target, label_zh=t.label_zh)
            for a, t in TRANSITIONS.items()]
