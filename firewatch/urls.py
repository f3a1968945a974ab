"""URLs people paste into settings and site files (webhooks, provider endpoints).

A webhook URL is only used when an alarm is sent, so a URL httpx cannot parse would surface at
the first fire, as a crash of the send.  It is checked when the file or setting is read: the
whitespace a paste from a secrets file brings (a trailing newline) is stripped, and what is left
must be an http(s) URL with a host and a valid port.
"""

from __future__ import annotations

from typing import Annotated

import httpx
from pydantic import AfterValidator, BeforeValidator


def checked_url(value: str) -> str:
    """``value`` without surrounding whitespace, once httpx can send a request to it."""
    url = value.strip()
    if any(c.isspace() for c in url):
        raise ValueError("a URL cannot contain spaces or line breaks")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ValueError(f"not a URL httpx can use: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError("expected an http:// or https:// URL with a host name")
    if parsed.port is not None and not 0 < parsed.port <= 65535:
        raise ValueError(f"port {parsed.port} is outside 1-65535")
    return url


#: a string field holding an http(s) URL, checked and stripped of surrounding whitespace
WebUrl = Annotated[str, AfterValidator(checked_url)]


def _blank_is_unset(value: object) -> object:
    """An empty value is no URL: ``FIREWATCH_WECOM_WEBHOOK_URL=${WECOM_WEBHOOK_URL:-}`` in the
    compose file gives the empty string when the operator set none."""
    return None if isinstance(value, str) and not value.strip() else value


#: an optional :data:`WebUrl`; empty or blank means unset
OptionalWebUrl = Annotated[WebUrl | None, BeforeValidator(_blank_is_unset)]
