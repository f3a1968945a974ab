"""Issue 14 §1 (one incident is one alarm): what the schema gained.

* ``alarms.level``: a ladder's alarm (gas low rising to high) keeps the level in force now;
  NULL on the alarms from before, which read it as their ``rule`` (firewatch.db.Alarm), so an
  open alarm of the old shape still clears when its rule does;
* ``alarms.category``: the rule's hazard category, what dispatch keys on with the severity;
  ``''`` on the alarms from before;
* ``alarm_levels``: each level an alarm reached, with when.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 00:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "alarm_levels",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("alarm_id", sa.Integer(), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("set_point", sa.Float(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["alarm_id"], ["alarms.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("alarm_levels", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alarm_levels_alarm_id"), ["alarm_id"], unique=False)

    # NOT NULL on a table with rows: filled by a server default that is then dropped, as the
    # model's default is Python's (as in 0002)
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.add_column(sa.Column("level", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("category", sa.String(length=32), nullable=False, server_default="")
        )
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.alter_column("category", server_default=None)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.drop_column("category")
        batch_op.drop_column("level")
    with op.batch_alter_table("alarm_levels", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alarm_levels_alarm_id"))
    op.drop_table("alarm_levels")
