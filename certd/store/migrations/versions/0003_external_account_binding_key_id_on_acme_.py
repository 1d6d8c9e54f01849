"""external account binding key id on ACME accounts

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("acme_account", schema=None) as batch_op:
        batch_op.add_column(sa.Column("eab_kid", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("acme_account", schema=None) as batch_op:
        batch_op.drop_column("eab_kid")
