"""Logging test clients in to the console API, as the pages and `firewatch simulate` do."""

from __future__ import annotations

import httpx

from firewatch.settings import Settings

DEMO_PASSWORD = Settings().demo_password
TOKEN_URL = "/api/auth/token"


def _authorize(client: httpx.Client | httpx.AsyncClient, reply: httpx.Response) -> None:
    reply.raise_for_status()
    client.headers["Authorization"] = f"Bearer {reply.json()['access_token']}"


def login(client: httpx.Client, username: str, password: str = DEMO_PASSWORD) -> httpx.Client:
    """Log ``client`` in (OAuth2 password flow): its requests then carry the bearer token."""
    _authorize(client, client.post(TOKEN_URL, data={"username": username, "password": password}))
    return client


async def login_async(
    client: httpx.AsyncClient, username: str, password: str = DEMO_PASSWORD
) -> httpx.AsyncClient:
    reply = await client.post(TOKEN_URL, data={"username": username, "password": password})
    _authorize(client, reply)
    return client
