"""revocations recorded by local CAs

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "revocation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("authority_id", sa.Integer(), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=True),
        sa.Column("subject", sa.String(length=120), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("not_valid_after", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["authority_id"], ["certificate_authority.id"], ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("authority_id", "serial"),
    )
    with op.batch_alter_table("revocation", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_revocation_authority_id"), ["authority_id"], unique=False
        )

    with op.batch_alter_table("dns_authenticator", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("follow_cnames", sa.Boolean(), server_default="1", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("dns_authenticator", schema=None) as batch_op:
        batch_op.drop_column("follow_cnames")

    with op.batch_alter_table("revocation", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_revocation_authority_id"))

    op.drop_table("revocation")
