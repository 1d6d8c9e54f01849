"""provider attributes stored as encrypted text

The provider attributes become one sealed text value instead of a JSON
document. Existing values are copied as JSON text; the start-up step that
loads the master key (certd.store.masterkey.unlock_store) encrypts them and
every private key still stored in the clear.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dns_authenticator", schema=None) as batch_op:
        batch_op.alter_column(
            "attributes",
            existing_type=sa.JSON(),
            type_=sa.Text(),
            existing_nullable=False,
            postgresql_using="attributes::text",
        )


def downgrade() -> None:
    # Sealed values are not JSON: decrypt them (rotate-master-key cannot) before
    # going back; this only restores the column type.
    with op.batch_alter_table("dns_authenticator", schema=None) as batch_op:
        batch_op.alter_column(
            "attributes",
            existing_type=sa.Text(),
            type_=sa.JSON(),
            existing_nullable=False,
            postgresql_using="attributes::json",
        )
