"""preferred chain of ACME certificates

The issuer common name of the chain an ACME certificate should be downloaded
with when the CA offers alternates, kept so that renewals choose the same.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("certificate", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("acme_preferred_chain", sa.String(length=200), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("certificate", schema=None) as batch_op:
        batch_op.drop_column("acme_preferred_chain")
