"""``GET /api/events``: committed changes pushed to the live pages as server-sent events.

Each event is one row as the JSON API shows it (``event: device|alarm|hazard``), filtered to
what the user may see; ``event: resync`` tells a page that fell behind to reload.  A comment
line every ``HEARTBEAT_S`` keeps proxies from closing an idle stream and lets the server notice
a client that went away.  The stream ends (``event: expired``) when the login token does, or
at the next heartbeat once the account is disabled or removed: a stream must not outlive the
login that opened it, and the page's reconnection then meets the login page.

A change that cannot be shown as its JSON route shows it (a row the response model refuses, a
notice relayed by another version) is set aside (``ChangeHub.failed``) and the page is told
to reload, which reads the rows afresh; the stream goes on with the next change.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from firewatch.db import User
from firewatch.hub import Change, ChangeHub
from firewatch.web.auth import AuthConfig, CurrentUser, Principal

HEARTBEAT_S = 15.0


def _frame(kind: str, data: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def events_router(
    hub: ChangeHub,
    models: dict[str, type[BaseModel]],
    named: Callable[[dict[str, Any]], dict[str, Any]],
) -> APIRouter:
    """``models`` maps an event kind to the response model its JSON route uses; ``named``
    adds what those routes add to a row's columns (the institution's name)."""
    router = APIRouter(tags=["push"])

    def encode(change: Change) -> bytes:
        if change.kind not in models:
            return _frame(change.kind, {})
        row = models[change.kind].model_validate(named(change.data))
        return _frame(change.kind, jsonable_encoder(row))

    async def still_enabled(config: AuthConfig, username: str) -> bool:
        try:
            async with config.sessions() as session:
                account = await session.get(User, username)
        except (SQLAlchemyError, OSError):
            # the database away: the token is still valid and the changes still come by the
            # broker, so the live map goes on; the next heartbeat asks again
            return True
        return account is not None and not account.disabled

    async def stream(user: Principal, config: AuthConfig) -> AsyncIterator[bytes]:
        async with hub.subscribe() as subscription:
            yield _frame("ready", {"user": user.username})
            changes = aiter(subscription)
            while (left_s := user.expires_at - time.time()) > 0:
                try:
                    change = await asyncio.wait_for(anext(changes), min(HEARTBEAT_S, left_s))
                except TimeoutError:
                    if not await still_enabled(config, user.username):
                        break
                    yield b": ping\n\n"
                    continue
                except StopAsyncIteration:
                    return
                if change.kind == "resync" or user.sees(change.institution_id):
                    try:
                        frame = encode(change)
                    except Exception as exc:
                        hub.failed("push", exc)
                        frame = _frame("resync", {})
                    yield frame
            yield _frame("expired", {})

    @router.get(
        "/api/events",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def events(user: CurrentUser, request: Request) -> StreamingResponse:
        return StreamingResponse(
            stream(user, request.app.state.auth),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return router
