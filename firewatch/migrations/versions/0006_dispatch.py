"""Issue 14 §4 (a person reached by two means): a voice call's reference, result and place on
the call list, kept on its notice.  All nullable: notices stored before have none.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 00:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("notices") as batch_op:
        batch_op.add_column(sa.Column("provider_ref", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("outcome", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("call_rank", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notices") as batch_op:
        batch_op.drop_column("call_rank")
        batch_op.drop_column("outcome")
        batch_op.drop_column("provider_ref")
