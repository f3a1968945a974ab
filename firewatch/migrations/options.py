"""How migrations are written and compared to the models: by ``env.py``, and by the test that
fails when a model changes without a migration."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate.api import AutogenContext

from firewatch.db import Base, UTCDateTime


def render_item(kind: str, item: Any, _autogen: AutogenContext) -> str | bool:
    """UTCDateTime as what it stores: a migration must not depend on the models' module."""
    if kind == "type" and isinstance(item, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


#: keyword arguments of alembic's ``context.configure`` / ``MigrationContext.configure``
OPTIONS: dict[str, Any] = {
    "target_metadata": Base.metadata,
    # SQLite alters most things only by rebuilding the table: later migrations say so
    "render_as_batch": True,
    "render_item": render_item,
    "compare_type": True,
    "compare_server_default": True,
}
