"""Issue 14 §3 (shielding and test mode): what the schema gained.

* ``devices.mode``/``mode_until``/``mode_reason``/``mode_note``/``mode_by``: a device shielded
  (屏蔽) or in test (测试) until a stated time, why, and by whom;
* ``alarms.mode``/``released_at``: an alarm raised under such a mode, and when it was told
  because the mode ended with the alarm still open;
* ``device_mode_events``: the audit log of each start, end and early cancel.

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-07 00:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def add_filled(table: str, column: sa.Column, fill: str) -> None:
    """Add a NOT NULL column to a table that may have rows: filled by a server default that is
    then dropped, as the models (whose defaults are Python's) have none."""
    column.server_default = sa.DefaultClause(fill)
    with op.batch_alter_table(table) as batch_op:
        batch_op.add_column(column)
    with op.batch_alter_table(table) as batch_op:
        batch_op.alter_column(column.name, server_default=None)


def upgrade() -> None:
    op.create_table(
        "device_mode_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("institution_id", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"]),
        sa.ForeignKeyConstraint(["institution_id"], ["institutions.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("device_mode_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_device_mode_events_device_id"), ["device_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_device_mode_events_institution_id"), ["institution_id"], unique=False
        )
    add_filled("devices", sa.Column("mode", sa.String(length=16), nullable=False), "normal")
    add_filled("devices", sa.Column("mode_reason", sa.String(length=16), nullable=False), "")
    add_filled("devices", sa.Column("mode_note", sa.Text(), nullable=False), "")
    add_filled("devices", sa.Column("mode_by", sa.String(length=64), nullable=False), "")
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mode_until", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mode", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("released_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.drop_column("released_at")
        batch_op.drop_column("mode")
    with op.batch_alter_table("devices", schema=None) as batch_op:
        for column in ("mode_until", "mode_by", "mode_note", "mode_reason", "mode"):
            batch_op.drop_column(column)
    with op.batch_alter_table("device_mode_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_mode_events_institution_id"))
        batch_op.drop_index(batch_op.f("ix_device_mode_events_device_id"))
    op.drop_table("device_mode_events")
