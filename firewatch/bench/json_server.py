"""The map benchmark's baseline: bare FastAPI on uvicorn serving JSON documents as they are.

``python -m firewatch.bench.json_server DIR PORT`` answers ``GET /<name>`` with the bytes of
``DIR/<name>.json``, read once at start: HTTP and framework cost only, no database, no
per-request serialization.  It runs in a process of its own, as the stack's web app does, on
uvicorn with the same settings.
"""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI, HTTPException, Response


def app_serving(documents: dict[str, bytes]) -> FastAPI:
    app = FastAPI()

    @app.get("/{name}")
    async def document(name: str) -> Response:
        if name not in documents:
            raise HTTPException(404)
        return Response(documents[name], media_type="application/json")

    return app


if __name__ == "__main__":
    directory, port = Path(sys.argv[1]), int(sys.argv[2])
    documents = {f.stem: f.read_bytes() for f in directory.glob("*.json")}
    uvicorn.run(
        app_serving(documents),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        log_config=None,
    )
