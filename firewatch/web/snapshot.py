"""Lists the map opens with, kept as ready response bytes per viewer scope.

The bureau's map asks for every device at once (2,000 in a county), from every open console,
and again on each ``resync``.  Read from the database, validated and serialised per request,
the list cost ~28 times what sending its bytes does (``firewatch bench map``).  A
:class:`Snapshot` keeps the serialised bytes (and their gzip) of each scope a user may have
(the bureau sees all; duty staff their own institution: firewatch.web.auth), so a request
costs its authorisation and the send.  The bytes are answered with an ``ETag``: a browser that
already holds them asks with ``If-None-Match`` and gets a 304 without a body.

Never staler than the live pages: the change hub tells the snapshot of every change it
publishes, before any page hears of it (:meth:`firewatch.hub.ChangeHub.on_publish`), and a
change of the snapshot's kinds (or a ``resync``) marks every scope out of date; the next request
reads the database again, which holds the change, since a change is published only after its
commit.  What changes without a notice (a device's last readings, which would flood the pages)
is at most ``max_age_s`` old.  One request rebuilds a scope at a time; the others wait for its
bytes instead of reading the database beside it.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response

from firewatch.hub import Change, ChangeHub

#: who sees what: ``None`` for the bureau's whole county, else one institution's id
Scope = str | None
#: the list's bytes for a scope, read from the database
Load = Callable[[Scope], Awaitable[bytes]]

#: the browser keeps the bytes but asks each time whether they still hold (an ETag); the list
#: is a logged-in user's, so no shared cache may keep it
CACHE_CONTROL = "private, no-cache"


@dataclass
class _Entry:
    body: bytes
    etag: str
    version: int
    built_at: float
    gzipped: bytes | None = None

    @property
    def gzip_etag(self) -> str:
        """The gzipped bytes' own tag: other bytes, another entity."""
        return f'{self.etag[:-1]}-gzip"'

    def gzip(self) -> bytes:
        if self.gzipped is None:
            self.gzipped = gzip.compress(self.body, compresslevel=5)
        return self.gzipped


@dataclass
class Snapshot:
    """A JSON list per scope, rebuilt when a change of ``kinds`` is published or after
    ``max_age_s``."""

    load: Load
    kinds: Collection[str]
    max_age_s: float
    #: bumped by every change that may alter the list: an entry of an older version is out of date
    version: int = 0
    _entries: dict[Scope, _Entry] = field(default_factory=dict)
    _building: dict[Scope, asyncio.Lock] = field(default_factory=dict)

    def follow(self, hub: ChangeHub) -> None:
        hub.on_publish(self.changed)

    def changed(self, change: Change) -> None:
        if change.kind == "resync" or change.kind in self.kinds:
            self.version += 1

    async def response(self, request: Request, scope: Scope) -> Response:
        """The list for ``scope``: 304 if the client holds it, gzipped if the client takes it."""
        entry = await self._current(scope)
        gzipped = "gzip" in request.headers.get("accept-encoding", "")
        etag = entry.gzip_etag if gzipped else entry.etag
        headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL, "Vary": "Accept-Encoding"}
        if _etags(request.headers.get("if-none-match", "")) & {entry.etag, entry.gzip_etag}:
            return Response(status_code=304, headers=headers)
        if gzipped:
            headers["Content-Encoding"] = "gzip"
            return Response(entry.gzip(), media_type="application/json", headers=headers)
        return Response(entry.body, media_type="application/json", headers=headers)

    def _fresh(self, entry: _Entry | None) -> bool:
        return (
            entry is not None
            and entry.version == self.version
            and time.monotonic() - entry.built_at < self.max_age_s
        )

    async def _current(self, scope: Scope) -> _Entry:
        entry = self._entries.get(scope)
        if self._fresh(entry):
            assert entry is not None
            return entry
        async with self._building.setdefault(scope, asyncio.Lock()):
            entry = self._entries.get(scope)
            if self._fresh(entry):  # built by the request this one waited for
                assert entry is not None
                return entry
            version, built_at = self.version, time.monotonic()  # before the read: a change
            body = await self.load(scope)  # published during it leaves the entry out of date
            digest = hashlib.blake2b(body, digest_size=12).hexdigest()
            entry = _Entry(body, f'"{digest}"', version, built_at)
            self._entries[scope] = entry
            return entry


def _etags(header: str) -> set[str]:
    """The entity tags of an ``If-None-Match`` header (weak ones compared as strong: the
    bytes answered for a tag are always the same)."""
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}
