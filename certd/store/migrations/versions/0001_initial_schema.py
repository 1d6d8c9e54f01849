"""initial schema

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "acme_account",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("directory", sa.String(length=500), nullable=False),
        sa.Column("account_url", sa.String(length=500), nullable=True),
        sa.Column("key_pem", sa.Text(), nullable=False),
        sa.Column("contact_email", sa.String(length=320), nullable=True),
        sa.Column("tos_agreed", sa.Boolean(), nullable=False),
        sa.Column("terms_of_service", sa.String(length=500), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("directory"),
    )
    op.create_table(
        "api_key",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("key_hash", sa.String(length=128), nullable=False),
        sa.Column("readonly", sa.Boolean(), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "certificate_authority",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("create_type", sa.String(length=40), nullable=False),
        sa.Column("certificate", sa.Text(), nullable=False),
        sa.Column("privatekey", sa.Text(), nullable=True),
        sa.Column("signedby_id", sa.Integer(), nullable=True),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_reason", sa.String(length=40), nullable=True),
        sa.Column("crl_number", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["signedby_id"], ["certificate_authority.id"], ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "dns_authenticator",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "job",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=120), nullable=False),
        sa.Column("arguments", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("progress_percent", sa.Double(), nullable=False),
        sa.Column("progress_description", sa.Text(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("error_data", sa.JSON(), nullable=True),
        sa.Column("caller", sa.String(length=120), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_state"), ["state"], unique=False)

    op.create_table(
        "certificate",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("cert_type", sa.String(length=16), nullable=False),
        sa.Column("create_type", sa.String(length=40), nullable=False),
        sa.Column("certificate", sa.Text(), nullable=True),
        sa.Column("privatekey", sa.Text(), nullable=True),
        sa.Column("csr", sa.Text(), nullable=True),
        sa.Column("signedby_id", sa.Integer(), nullable=True),
        sa.Column("csr_id", sa.Integer(), nullable=True),
        sa.Column("acme_account_id", sa.Integer(), nullable=True),
        sa.Column("acme_directory_uri", sa.String(length=500), nullable=True),
        sa.Column("acme_uri", sa.String(length=500), nullable=True),
        sa.Column("dns_mapping", sa.JSON(), nullable=False),
        sa.Column("renew_days", sa.Integer(), nullable=True),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_reason", sa.String(length=40), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("failure_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["acme_account_id"], ["acme_account.id"], ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(["csr_id"], ["certificate.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(
            ["signedby_id"], ["certificate_authority.id"], ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    with op.batch_alter_table("certificate", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_certificate_next_attempt_at"),
            ["next_attempt_at"],
            unique=False,
        )

    op.create_table(
        "challenge_record",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("authenticator_id", sa.Integer(), nullable=False),
        sa.Column("zone", sa.String(length=255), nullable=True),
        sa.Column("fqdn", sa.String(length=255), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("order_url", sa.String(length=500), nullable=True),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["authenticator_id"], ["dns_authenticator.id"], ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("challenge_record")
    with op.batch_alter_table("certificate", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_certificate_next_attempt_at"))

    op.drop_table("certificate")
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_state"))

    op.drop_table("job")
    op.drop_table("dns_authenticator")
    op.drop_table("certificate_authority")
    op.drop_table("api_key")
    op.drop_table("acme_account")
