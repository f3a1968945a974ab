"""``GET /api/events``: committed changes pushed to the live pages as server-sent events.

Each event is one row as the JSON API shows it (``event: device|alarm|hazard``), filtered to
what the user may see; ``event: resync`` tells a page that fell behind to reload.  A comment
line every ``HEARTBEAT_S`` keeps proxies from closing an idle stream and lets the server notice
a client that went away.

A change that cannot be shown as its JSON route shows it (a row the response model refuses, a
notice relayed by another version) is set aside (``ChangeHub.failed``) and the page is told
to reload, which reads the rows afresh; the stream goes on with the next change.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter
from fastapi.encoders import jsonable_encoder
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from firewatch.hub import Change, ChangeHub
from firewatch.web.auth import CurrentUser, Principal

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

    async def stream(user: Principal) -> AsyncIterator[bytes]:
        async with hub.subscribe() as subscription:
            yield _frame("ready", {"user": user.username})
            changes = aiter(subscription)
            while True:
                try:
                    change = await asyncio.wait_for(anext(changes), HEARTBEAT_S)
                except TimeoutError:
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

    @router.get(
        "/api/events",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def events(user: CurrentUser) -> StreamingResponse:
        return StreamingResponse(
            stream(user), media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return router
