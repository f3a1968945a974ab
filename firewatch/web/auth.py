"""Who may see and do what: login (OAuth2 password flow, signed bearer tokens) and scope.

The pattern is FastAPI's own (security docs: ``OAuth2PasswordBearer``, PyJWT, pwdlib).  Every
data route takes ``CurrentUser`` or ``require_roles(...)``, and restricts its query with
``scope()`` or checks a row with ``Principal.sees()``: duty staff see their own institution
only.  A row of another institution answers exactly like a missing one (404), so guessing ids
tells a staff member nothing.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any

import jwt
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.security import OAuth2PasswordBearer, OAuth2PasswordRequestForm
from pydantic import BaseModel
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import async_sessionmaker

from alerts.ledger import TRANSITIONS, Source
from firewatch.accounts import ROLE_ZH, HashingBusy, PasswordWork, Role, authenticate
from firewatch.contract import utc_now
from firewatch.db import User
from firewatch.device_modes import Mode
from firewatch.settings import Settings
from firewatch.web.throttle import LoginThrottle

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
#: who may shield a device or put it in test mode (staff: their own institution's devices); a
#: tester only tests, so that `firewatch simulate --test-mode` wakes nobody
DEVICE_MODES: dict[Role, frozenset[Mode]] = {
    Role.ADMIN: frozenset({Mode.SHIELDED, Mode.TEST}),
    Role.STAFF: frozenset({Mode.SHIELDED, Mode.TEST}),
    Role.VIEWER: frozenset(),
    Role.TESTER: frozenset({Mode.TEST}),
}
ACKNOWLEDGERS = (Role.ADMIN, Role.STAFF)
OPERATORS = (Role.ADMIN, Role.TESTER)  # simulators, dead letters

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/auth/token")
#: the same bearer header where a login is optional (anonymous readers get less)
optional_token = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False)


@dataclass(frozen=True)
class AuthConfig:
    sessions: async_sessionmaker
    secret_key: str
    token_hours: float
    throttle: LoginThrottle
    metrics_token: str | None = None
    hashing: PasswordWork = field(default_factory=PasswordWork)

    @classmethod
    def from_settings(cls, sessions: async_sessionmaker, settings: Settings) -> AuthConfig:
        return cls(
            sessions,
            settings.secret_key,
            settings.token_hours,
            LoginThrottle(
                settings.login_failures_per_account,
                settings.login_failures_per_address,
                settings.login_failure_window_s,
            ),
            settings.metrics_token,
        )


@dataclass(frozen=True)
class Principal:
    username: str
    display_name: str
    role: Role
    institution_id: str | None  # None: bureau-wide
    expires_at: float = float("inf")  # the token's end (epoch seconds): live streams end there

    def sees(self, institution_id: str | None) -> bool:
        return self.institution_id is None or institution_id == self.institution_id


def issue_token(config: AuthConfig, user: User) -> str:
    now = utc_now()
    claims = {
        "sub": user.username,
        "gen": user.token_generation,
        "iat": now,
        "exp": now + timedelta(hours=config.token_hours),
    }
    return jwt.encode(claims, config.secret_key, algorithm=ALGORITHM)


def _unauthorized(detail: str) -> HTTPException:
    """A 401 that tells the client to log in (again) and send a bearer token."""
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


async def current_user(
    request: Request, token: Annotated[str, Depends(oauth2_scheme)]
) -> Principal:
    config: AuthConfig = request.app.state.auth
    try:
        claims = jwt.decode(
            token, config.secret_key, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]}
        )
    except jwt.InvalidTokenError:
        raise _unauthorized("登录已失效，请重新登录 (invalid or expired token)") from None
    async with config.sessions() as session:
        user = await session.get(User, claims["sub"])
    if user is None:  # removed since the token was issued
        raise _unauthorized("账号不存在 (no such account)")
    if user.disabled:  # disabled since the token was issued
        raise _unauthorized("账号已停用 (account disabled)")
    if claims.get("gen", 0) != user.token_generation:  # a new password since
        raise _unauthorized("密码已更改，请重新登录 (password changed)")
    return Principal(
        user.username, user.display_name, Role(user.role), user.institution_id, claims["exp"]
    )


CurrentUser = Annotated[Principal, Depends(current_user)]


async def is_admin_or_scraper(
    request: Request, token: Annotated[str | None, Depends(optional_token)]
) -> bool:
    """Whether the request may read the operator's details (/metrics, the detailed health):
    a logged-in admin, or Prometheus with the metrics token.  Anonymous: False, no error."""
    if token is None:
        return False
    config: AuthConfig = request.app.state.auth
    if config.metrics_token and hmac.compare_digest(token.encode(), config.metrics_token.encode()):
        return True
    try:
        user = await current_user(request, token)
    except HTTPException:
        return False
    return user.role is Role.ADMIN


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
    device_modes: list[str]


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
async def login(
    request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()]
) -> TokenOut:
    """Throttled: after too many failures of the account or the address lately, 429 with
    Retry-After before the password is even checked."""
    config: AuthConfig = request.app.state.auth
    address = request.client.host if request.client else ""
    wait_s = config.throttle.retry_after_s(form.username, address)
    if wait_s:
        raise HTTPException(
            429,
            f"登录失败次数过多，请 {wait_s} 秒后再试 (too many failed logins)",
            headers={"Retry-After": str(wait_s)},
        )
    try:
        user = await authenticate(config.sessions, config.hashing, form.username, form.password)
    except HashingBusy:
        raise HTTPException(
            503, "登录繁忙，请稍后再试 (too many logins at once)", headers={"Retry-After": "1"}
        ) from None
    if user is None:
        config.throttle.failed(form.username, address)
        raise _unauthorized("用户名或密码错误 (wrong user name or password)")
    config.throttle.succeeded(form.username)
    return TokenOut(access_token=issue_token(config, user))


@router.get("/api/me", response_model=MeOut)
async def me(user: CurrentUser) -> MeOut:
    return MeOut(
        username=user.username,
        display_name=user.display_name,
        role=user.role,
        role_zh=ROLE_ZH[user.role],
        institution_id=user.institution_id,
        permissions=PermissionsOut(
            acknowledge=user.role in ACKNOWLEDGERS,
            simulate=user.role in OPERATORS,
            dead_letters=user.role in OPERATORS,
            hazard_actions=sorted(HAZARD_ACTIONS[user.role]),
            file_sources=sorted(FILING_SOURCES[user.role]),
            device_modes=sorted(DEVICE_MODES[user.role]),
        ),
    )


@router.get("/api/hazards/transitions", response_model=list[TransitionOut])
async def transitions(_user: CurrentUser) -> list[TransitionOut]:
    """The ledger's status flow, so pages offer only the steps that fit an entry's status."""
    return [
        TransitionOut(action=a, sources=list(t.sources), target=t.target, label_zh=t.label_zh)
        for a, t in TRANSITIONS.items()
    ]
