"""Persistence: SQLAlchemy 2 async models, the engine, and start-up migrations.

SQLite (aiosqlite) is the default. PostgreSQL (asyncpg, the ``postgresql``
extra) works as well: tests/store runs the migrations, a new store and a
daemon's API work on a real PostgreSQL 15. SQLite's shortcuts (the plain
sqlite3 reader, ``read_now``) are not used there; reads run on the pool.

Not there yet for several daemons sharing one PostgreSQL store: each marks
every unfinished job as interrupted when it starts (certd.api.jobs.recover),
even those another daemon is running; each schedules renewals, deployments
and CRLs on its own; two may claim the same webhook delivery at once. They
also need one master key (store.master_key_file), which rotate-master-key
replaces only where it runs. Creating and migrating the store is safe: one
daemon does it under an advisory lock while the others wait.
"""
