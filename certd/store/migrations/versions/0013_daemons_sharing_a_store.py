"""daemons sharing a store: job node and renewal lease

Several daemons may share one PostgreSQL store. A job row names the daemon
(node) that runs it, so that a daemon starting marks only its own unfinished
jobs as interrupted; rows from before have none and are recovered as before.
A certificate row holds the lease of the daemon renewing it, so that two
daemons do not renew one certificate at once.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("certificate", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("renewing_node", sa.String(length=64), nullable=True)
        )
        batch_op.add_column(
            sa.Column("renewal_lease_until", sa.DateTime(timezone=True), nullable=True)
        )

    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("node", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("node")

    with op.batch_alter_table("certificate", schema=None) as batch_op:
        batch_op.drop_column("renewal_lease_until")
        batch_op.drop_column("renewing_node")
