"""Issue 14 §2 (confirming says what it was): ``alarms.classification``.

What the person who acknowledged an alarm says it was: real, false, test or device fault
(``alerts.confirmation.Classification``).  Alarms acknowledged before keep NULL, shown as
未分类 (unclassified) and counted as such in the statistics.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 00:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.add_column(sa.Column("classification", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.drop_column("classification")
