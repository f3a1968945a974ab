"""The map's optional tile layer: configured, keyed, and flagged for GCJ-02 when it is AMap's."""

from __future__ import annotations

import httpx

from firewatch.settings import Settings
from tests.support.auth import login_async
from tests.support.webapp import demo_app

AMAP = "https://webrd0{s}.is.autonavi.com/appmaptile?style=8&x={x}&y={y}&z={z}&key={key}"


async def test_without_a_tile_url_the_page_draws_only_the_bundled_outline(tmp_path):
    async with (
        demo_app(tmp_path) as demo,
        httpx.AsyncClient(transport=httpx.ASGITransport(demo.app), base_url="http://t") as api,
    ):
        await login_async(api, "viewer")
        config = (await api.get("/api/map/config")).json()
        assert config["tile_url"] is None
        outline = (await api.get("/api/map/outline")).json()
        assert outline["features"][0]["properties"]["name"] == "青阳县（演示）"


async def test_an_amap_tile_layer_gets_its_key_and_the_gcj02_shift(tmp_path):
    settings = Settings(
        map_tile_url=AMAP,
        map_tile_key="k123",
        map_tile_coords="gcj02",
        map_tile_attribution="© 高德地图",
    )
    async with (
        demo_app(tmp_path, settings) as demo,
        httpx.AsyncClient(transport=httpx.ASGITransport(demo.app), base_url="http://t") as api,
    ):
        await login_async(api, "viewer")
        config = (await api.get("/api/map/config")).json()
    assert config["tile_url"].endswith("&key=k123") and "{x}" in config["tile_url"]
    assert (config["tile_coords"], config["tile_attribution"]) == ("gcj02", "© 高德地图")
    assert "GCJ-02" in config["note_zh"]
