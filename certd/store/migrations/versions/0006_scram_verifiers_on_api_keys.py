"""SCRAM verifiers on API keys

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("scram_salt", sa.String(length=64), nullable=True)
        )
        batch_op.add_column(sa.Column("scram_iterations", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("scram_stored_key", sa.String(length=128), nullable=True)
        )
        batch_op.add_column(
            sa.Column("scram_server_key", sa.String(length=128), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.drop_column("scram_server_key")
        batch_op.drop_column("scram_stored_key")
        batch_op.drop_column("scram_iterations")
        batch_op.drop_column("scram_salt")
