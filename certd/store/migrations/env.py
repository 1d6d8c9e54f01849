"""Alembic environment: runs on the connection certd hands over."""

from alembic import context

from certd.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("certd runs migrations itself at start-up")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
