"""ids never reused

SQLite gives a new row the highest id in use plus one, so deleting the newest
CSR, certificate, CA, DNS authenticator or ACME account let the next one take
its id: a queued job, or a caller holding the id, then reached the wrong row.
The tables are rebuilt with AUTOINCREMENT; copying the rows sets each table's
sequence to its highest id.

Other databases give an integer primary key its values from a sequence (a
PostgreSQL SERIAL), which never hands a number out twice: nothing to do
there, and rebuilding a table others point at would fail.

Revision ID: 0010
Revises: 0009
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TABLES = ("dns_authenticator", "acme_account", "certificate_authority", "certificate")


def _sqlite() -> bool:
    return op.get_context().dialect.name == "sqlite"


def upgrade() -> None:
    if not _sqlite():
        return
    for table in TABLES:
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ):
            pass


def downgrade() -> None:
    if not _sqlite():
        return
    for table in reversed(TABLES):
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": False}
        ):
            pass
