"""Persistence: SQLAlchemy 2 async models, the engine, and start-up migrations.

SQLite (aiosqlite) is the default. PostgreSQL (asyncpg, a dependency of
certd) works as well: tests/store runs the migrations, a new store and a
daemon's API work on a real PostgreSQL 15. SQLite's shortcuts (the plain
sqlite3 reader, ``read_now``) are not used there; reads run on the pool.

Several daemons may share one PostgreSQL store, each with its own state
directory (its node id, certd.service.node_id, is kept there) and one master
key file. Each recovers only its own unfinished jobs (certd.api.jobs.recover);
a certificate is renewed by one of them at a time, under a lease on its row
that ends by itself if the daemon dies (certd.renewal.renewer); a webhook
delivery is claimed by one; CRLs are published under a lock on the CA's row,
so their numbers never repeat. Each daemon deploys every certificate with a
deploy spec onto its own host and keeps the outcome and retries in its own
``deployment`` row (certd.deploy.deployer). Creating and migrating the store
is safe: one daemon does it under an advisory lock while the others wait.
Each keeps a ``node`` row with its master key's id and a heartbeat
(certd.store.nodes): a second process with the same node id (a copied state
directory) or with another master key is refused at start, and
rotate-master-key while any daemon has been seen within a few heartbeats.

Not there yet for them:

- Deployments: a daemon with ``renewal.enabled = false`` runs no scheduler,
  so it deploys a certificate renewed elsewhere only when asked
  (certificate.deploy); the rows of a node gone for good stay, shown by
  certificate.get_deploy.
- Webhooks: deliveries to a hook a daemon has no config for are left a day
  to the daemons that have it, then dropped: give every daemon the same
  ``events.webhooks``.
- Jobs of a daemon that stopped being seen are ended (ABORTED) by the
  others (certd.store.nodes), not taken over: what they did is not redone.
- A daemon whose heartbeat stalls for longer than the window (a suspended
  VM) may find its row taken over by a copy; it logs node_presence_lost and
  goes on running.
- Leases and webhook claims compare times of the daemons' clocks: hosts
  must keep them in step (NTP; minutes apart would let two daemons renew).
- rotate-master-key replaces store.master_key_file only where it runs.
"""
