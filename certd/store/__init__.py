"""Persistence: SQLAlchemy 2 async models, the engine, and start-up migrations.

SQLite (aiosqlite) is the default; the models avoid SQLite-only features so a
PostgreSQL URL works as well.
"""
