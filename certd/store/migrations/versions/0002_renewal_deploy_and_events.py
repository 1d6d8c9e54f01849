"""renewal state, renewal attempts, deploy targets and events

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=48), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("certificate_id", sa.Integer(), nullable=True),
        sa.Column("subject", sa.String(length=120), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["certificate_id"], ["certificate.id"], ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_event_certificate_id"), ["certificate_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_event_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_event_kind"), ["kind"], unique=False)

    op.create_table(
        "renewal_attempt",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("certificate_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("privatekey", sa.Text(), nullable=True),
        sa.Column("csr", sa.Text(), nullable=True),
        sa.Column("replaces", sa.String(length=500), nullable=True),
        sa.Column("order_url", sa.String(length=500), nullable=True),
        sa.Column("order_count", sa.Integer(), nullable=False),
        sa.Column("old_serial", sa.String(length=64), nullable=True),
        sa.Column("new_serial", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["certificate_id"], ["certificate.id"], ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("renewal_attempt", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_renewal_attempt_certificate_id"),
            ["certificate_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_renewal_attempt_state"), ["state"], unique=False
        )

    with op.batch_alter_table("certificate", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("next_attempt_reason", sa.String(length=32), nullable=True)
        )
        batch_op.add_column(
            sa.Column("retry_not_before", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column(
                "reuse_key", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
        batch_op.add_column(
            sa.Column("ari_window_start", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("ari_window_end", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("ari_next_fetch_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("deploy", sa.JSON(), nullable=False, server_default="{}")
        )
        batch_op.add_column(
            sa.Column("deploy_state", sa.JSON(), nullable=False, server_default="{}")
        )
        batch_op.add_column(
            sa.Column(
                "deploy_next_attempt_at", sa.DateTime(timezone=True), nullable=True
            )
        )
        batch_op.create_index(
            batch_op.f("ix_certificate_deploy_next_attempt_at"),
            ["deploy_next_attempt_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("certificate", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_certificate_deploy_next_attempt_at"))
        batch_op.drop_column("deploy_next_attempt_at")
        batch_op.drop_column("deploy_state")
        batch_op.drop_column("deploy")
        batch_op.drop_column("ari_next_fetch_at")
        batch_op.drop_column("ari_window_end")
        batch_op.drop_column("ari_window_start")
        batch_op.drop_column("reuse_key")
        batch_op.drop_column("retry_not_before")
        batch_op.drop_column("next_attempt_reason")

    with op.batch_alter_table("renewal_attempt", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_renewal_attempt_state"))
        batch_op.drop_index(batch_op.f("ix_renewal_attempt_certificate_id"))

    op.drop_table("renewal_attempt")
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_event_kind"))
        batch_op.drop_index(batch_op.f("ix_event_created_at"))
        batch_op.drop_index(batch_op.f("ix_event_certificate_id"))

    op.drop_table("event")
