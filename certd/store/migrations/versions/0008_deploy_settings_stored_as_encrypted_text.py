"""deploy settings stored as encrypted text

A certificate's deploy settings hold PKCS#12 passphrases, so they become one
sealed text value like the provider attributes (see 0007). The server default
'{}' stays: an empty document holds nothing to hide, and the encrypted column
type reads it as such; the start-up step seals every other value.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("certificate", schema=None) as batch_op:
        batch_op.alter_column(
            "deploy",
            existing_type=sa.JSON(),
            type_=sa.Text(),
            existing_nullable=False,
            existing_server_default=sa.text("'{}'"),
            postgresql_using="deploy::text",
        )
    if op.get_context().dialect.name != "sqlite":
        # PostgreSQL keeps the default as it was written, a json value ('{}'::json),
        # on the text column: give it the text default a new store has.
        op.alter_column("certificate", "deploy", server_default=sa.text("'{}'"))


def downgrade() -> None:
    # Sealed values are not JSON: this only restores the column type.
    with op.batch_alter_table("certificate", schema=None) as batch_op:
        batch_op.alter_column(
            "deploy",
            existing_type=sa.Text(),
            type_=sa.JSON(),
            existing_nullable=False,
            existing_server_default=sa.text("'{}'"),
            postgresql_using="deploy::json",
        )
