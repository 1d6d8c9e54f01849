"""CRL of each certificate authority

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("certificate_authority", schema=None) as batch_op:
        batch_op.add_column(sa.Column("crl", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("certificate_authority", schema=None) as batch_op:
        batch_op.drop_column("crl")
