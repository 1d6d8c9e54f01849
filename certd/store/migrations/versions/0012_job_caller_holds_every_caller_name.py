"""job caller holds every caller name

A job's caller is "apikey:" and the key's name, which may be 120 characters:
127 in all, more than the column's 120. SQLite kept the whole name anyway;
PostgreSQL refused the job. The column now holds 255 characters.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.alter_column(
            "caller",
            existing_type=sa.String(length=120),
            type_=sa.String(length=255),
            existing_nullable=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.alter_column(
            "caller",
            existing_type=sa.String(length=255),
            type_=sa.String(length=120),
            existing_nullable=False,
        )
