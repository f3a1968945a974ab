"""The console's pages (static HTML shells whose ES modules call the JSON API) and map settings.

Pages carry no data: what a page shows comes from the API under the user's token, so scope is
enforced there.  A page without a valid token sends the browser to ``/login``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse
from pydantic import BaseModel

from firewatch.settings import Settings
from firewatch.web.auth import CurrentUser

PAGES = {
    "/": "index.html",
    "/login": "login.html",
    "/alarms": "alarms.html",
    "/ledger": "ledger.html",
}


class MapConfigOut(BaseModel):
    tile_url: str | None
    tile_attribution: str
    tile_coords: str
    note_zh: str


def console_router(static_dir: Any, settings: Settings) -> APIRouter:
    router = APIRouter()

    def page(name: str):
        async def serve() -> FileResponse:
            return FileResponse(static_dir / name, headers={"Cache-Control": "no-cache"})

        return serve

    for path, name in PAGES.items():
        router.add_api_route(path, page(name), include_in_schema=False)
    router.add_api_route("/devices/{device_id}", page("device.html"), include_in_schema=False)

    @router.get("/api/map/config", response_model=MapConfigOut, tags=["map"])
    async def map_config(_user: CurrentUser) -> MapConfigOut:
        """The optional tile layer.  Coordinates are stored in WGS-84; AMap tiles are drawn in
        GCJ-02, so with ``tile_coords = gcj02`` the page shifts markers and outline."""
        url = settings.map_tile_url
        if url and settings.map_tile_key:
            url = url.replace("{key}", settings.map_tile_key)
        return MapConfigOut(
            tile_url=url,
            tile_attribution=settings.map_tile_attribution,
            tile_coords=settings.map_tile_coords,
            note_zh=(
                "坐标按 WGS-84 存储；高德底图为 GCJ-02，绘制时偏移换算；"
                "天地图（CGCS2000）与 WGS-84 相差厘米级。"
            ),
        )

    return router
