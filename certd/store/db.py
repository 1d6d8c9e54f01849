"""The database engine, sessions, and schema migrations at start-up."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from sqlalchemy import create_engine, event, inspect, make_url, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session
from sqlalchemy.pool import AsyncAdaptedQueuePool

from certd.errors import CertdError, ValidationError
from certd.store.crypto import install_keyring

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

    from certd.store.crypto import Keyring

log = structlog.get_logger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
T = TypeVar("T")
# The task that has a session open, so that opening a second one in it fails
# at once instead of waiting for the connection the first one holds.
_session_task: ContextVar[asyncio.Task[Any] | None] = ContextVar(
    "certd_session_task", default=None
)
# Threads that run whole read functions on SQLite (see Database.read).
READ_THREADS = 4
# The longest Database.read_now waits for a lock on the event loop's thread
# before it gives up and the caller reads through a worker thread instead.
READ_NOW_BUSY_MS = 20
# How long close() waits for a session still open to give its connection back.
CLOSE_WAIT = 2.0
# The PostgreSQL advisory lock migrate() holds (any number no other program
# sharing the database uses; this one spells "certd" in ASCII).
MIGRATION_LOCK = 0x6365727464


def _no_session_open() -> None:
    if _session_task.get() is asyncio.current_task():
        raise RuntimeError("a session is already open in this task")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any, busy_ms: int = 10000) -> None:
    # WAL lets readers go on while a job writes; synchronous=FULL makes every
    # commit survive power loss, which a key store needs more than speed.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
    cursor.close()


def schema_head() -> str:
    """The newest migration's revision: each file is named after its revision."""
    return max(path.name.split("_", 1)[0] for path in MIGRATIONS.glob("versions/*.py"))


def schema_revision(connection: Connection) -> str | None:
    """The revision the database is at, or None for a database never migrated."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def alembic_config(connection: Connection | None = None) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _has_tables(connection: Connection) -> bool:
    return bool(inspect(connection).get_table_names())


def _create(connection: Connection, revision: str) -> None:
    from certd.store.models import Base

    Base.metadata.create_all(connection)
    # The table alembic keeps its revision in, as alembic itself creates it.
    connection.execute(
        text(
            "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
            "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
        )
    )
    connection.execute(
        text("INSERT INTO alembic_version (version_num) VALUES (:revision)"),
        {"revision": revision},
    )


def _upgrade(connection: Connection) -> None:
    from alembic import command

    command.upgrade(alembic_config(connection), "head")
    if connection.dialect.name == "sqlite":
        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            tables = ", ".join(sorted({row[0] for row in broken}))
            raise RuntimeError(
                f"migrating the store would leave {len(broken)} rows whose "
                f"foreign keys point nowhere (in {tables}); nothing was changed"
            )


# The async driver of each database certd is tested on, for a URL without one.
_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def _check_async_driver(url: str) -> None:
    """Refuse a URL that names no async driver, saying which one to name.

    Raises:
        ValidationError: at ``store.database_url``.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        return  # create_async_engine says what is wrong with it
    name = parsed.drivername
    wanted = _ASYNC_DRIVERS.get("postgresql" if name == "postgres" else name)
    if wanted is not None:
        shown = parsed.set(drivername=wanted).render_as_string(hide_password=True)
        raise ValidationError.single(
            "store.database_url", f"name the async driver: {shown}"
        )


class Database:
    """Owns the engine and hands out sessions."""

    def __init__(self, url: str, *, lock_wait: float = 10.0) -> None:
        """``lock_wait``: seconds to wait for another process's write lock."""
        self.url = url
        if url.startswith("sqlite"):
            self._prepare_sqlite_dir(url)
        options: dict[str, Any] = {}
        if url.startswith("sqlite"):
            # Every session goes through one connection. SQLite lets one writer
            # in at a time, and writers on separate connections wait for it by
            # polling with growing sleeps: under load one could miss every turn
            # until busy_timeout and fail with "database is locked". Sessions
            # queue for the connection in order instead; reads that must not
            # wait behind writers go through Database.read.
            # (Named, since SQLAlchemy would give an in-memory store a pool
            # that hands its one connection to every session at once.)
            options = {
                "poolclass": AsyncAdaptedQueuePool,
                "pool_size": 1,
                "max_overflow": 0,
                "pool_timeout": 60,
            }
        else:
            # A server restart or an idle timeout closes pooled connections
            # behind the pool's back: each is checked before it is handed out.
            options = {"pool_pre_ping": True}
        _check_async_driver(url)
        try:
            self.engine: AsyncEngine = create_async_engine(url, **options)
        except ImportError as exc:
            raise ValidationError.single(
                "store.database_url",
                f"its database driver {exc.name!r} is not installed (certd "
                "comes with sqlite+aiosqlite and postgresql+asyncpg)",
            ) from None
        except ArgumentError as exc:
            raise ValidationError.single(
                "store.database_url", f"not a database URL SQLAlchemy knows: {exc}"
            ) from None
        if self.engine.dialect.name == "sqlite":
            pragmas = functools.partial(_sqlite_pragmas, busy_ms=int(lock_wait * 1000))
            event.listen(self.engine.sync_engine, "connect", pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._reader: Engine | None = None
        self._read_pool: ThreadPoolExecutor | None = None
        self._now: sqlite3.Connection | None = None
        self._now_sql: dict[int, tuple[Any, str, tuple[str, ...]]] = {}
        # Set by close(): a task left running by the stop gets an error instead
        # of a new connection, whose thread would keep the process from exiting.
        self.closed = False
        database = self.engine.url.database
        if self.engine.dialect.name == "sqlite" and database not in (
            None,
            "",
            ":memory:",
        ):
            # aiosqlite hands every cursor step (open, execute, fetch, close) to
            # its thread and back; a whole read through a plain connection in
            # one worker thread costs one hand-off instead of about ten.
            self._reader = create_engine(
                self.engine.url.set(drivername="sqlite"),
                pool_size=READ_THREADS,
                max_overflow=0,
            )
            event.listen(self._reader, "connect", _sqlite_pragmas)
            self._read_pool = ThreadPoolExecutor(
                READ_THREADS, thread_name_prefix="certd-read"
            )

    @staticmethod
    def _prepare_sqlite_dir(url: str) -> None:
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)

    async def migrate(self) -> None:
        """Bring the schema to the newest revision.

        A new store is created from the models and stamped with the newest
        revision (a test holds that schema equal to the migrations' result);
        an older one runs alembic's migrations. Alembic, with mako and the rest
        of its imports, costs a daemon about 12 MB, so it is loaded only when a
        store is behind.
        """
        url = self.engine.url.render_as_string(hide_password=True)
        head = schema_head()
        try:
            async with self.engine.connect():
                pass
        except (OSError, TimeoutError, DBAPIError) as exc:
            reason = getattr(exc, "orig", None) or exc
            raise ValidationError.single(
                "store.database_url",
                f"cannot open the store at {url}: {reason or type(reason).__name__}",
            ) from None
        async with self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                # Daemons sharing one store may start together: one creates or
                # migrates it while the others wait here, then find it current.
                # Held until this transaction ends.
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                )
            current = await conn.run_sync(schema_revision)
            if current == head:
                log.info("schema_current", url=url, revision=head)
                return
            create = current is None and not await conn.run_sync(_has_tables)
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:
                # A batch migration copies a table and drops the old one; with
                # foreign keys on, the drop would run their ON DELETE actions
                # (clearing csr_id, deleting renewal attempts) and check every
                # row against each referencing column. They are checked once,
                # at the end, instead. Set outside a transaction, or it is
                # ignored.
                await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            try:
                if sqlite:
                    # Python's sqlite3 sends no BEGIN before DDL, so each
                    # CREATE or ALTER would commit on its own and a crash
                    # would leave half a schema: one transaction for all.
                    await conn.exec_driver_sql("BEGIN")
                if create:
                    await conn.run_sync(_create, head)
                else:
                    await conn.run_sync(_upgrade)
                await conn.commit()
            except BaseException:
                await conn.rollback()
                raise
            finally:
                if sqlite:
                    await conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                    await conn.commit()
        if create:
            log.info("schema_created", url=url, revision=head)
        else:
            log.info("schema_migrated", url=url, revision=head, previous=current)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction that commits on success and rolls back on error.

        Sessions share one connection on SQLite, so code that holds one must
        not open another (it would wait for its own connection): pass the
        open session down instead. Doing so in the same task raises.
        """
        _no_session_open()
        if self.closed:
            raise CertdError("the store is closed: the daemon is stopping")
        token = _session_task.set(asyncio.current_task())
        try:
            async with self.sessions() as session, session.begin():
                yield session
        finally:
            _session_task.reset(token)

    def install_keyring(self, keyring: Keyring | None) -> None:
        """Let the encrypted columns open and seal on every connection of the store."""
        install_keyring(self.engine, keyring)
        if self._reader is not None:
            install_keyring(self._reader, keyring)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` with a connection in one read transaction and return its result.

        Meant for reads on hot paths and of many rows, and for any read that
        must not queue behind the sessions (they share one connection on
        SQLite): ``fn`` runs in a worker thread on a connection of its own
        there. On PostgreSQL it runs on a pooled connection in a read-only
        transaction; either way all its statements see one snapshot.
        """
        if self._reader is None or self._read_pool is None:
            if self.engine.dialect.name == "sqlite":
                _no_session_open()  # the pool's one connection would be its own
                async with self.engine.connect() as conn:
                    return await conn.run_sync(fn)
            # Elsewhere (PostgreSQL) ``fn`` runs on the event loop's thread, on
            # a connection of the pool. REPEATABLE READ: every statement of
            # ``fn`` sees the store as of the first, as a SQLite read does.
            async with self.engine.connect() as conn:
                await conn.execution_options(
                    isolation_level="REPEATABLE READ", postgresql_readonly=True
                )
                return await conn.run_sync(fn)
        reader = self._reader

        def run() -> T:
            with reader.connect() as conn:
                # Python's sqlite3 sends no BEGIN before a SELECT, so without
                # one each statement would see the store as it is at that moment.
                conn.exec_driver_sql("BEGIN")
                return fn(conn)

        return await asyncio.get_running_loop().run_in_executor(self._read_pool, run)

    async def read_objects(self, fn: Callable[[Session], T]) -> T:
        """:meth:`read` with an ORM session on that connection.

        The objects ``fn`` returns are detached: what it loaded (every column,
        encrypted ones opened) can be read, relationships not.
        """

        def run(conn: Connection) -> T:
            with Session(bind=conn, expire_on_commit=False) as session:
                return fn(session)

        return await self.read(run)

    def read_now(self, statement: Any, params: dict[str, Any]) -> list[Any] | None:
        """Rows of one small indexed SELECT run right here, on the calling thread.

        For lookups by key on the hottest paths, where handing the read to a
        worker thread costs several times the read itself. Each call is its own
        transaction (no snapshot is held between calls); values come back as
        SQLite stores them, without SQLAlchemy's type processing. Returns None
        where this is not possible (not SQLite, or the database is busy for
        more than READ_NOW_BUSY_MS): then the caller uses :meth:`read`.
        """
        if self._reader is None:
            return None
        sql, names = self._compiled(statement)
        try:
            if self._now is None:
                path = self._reader.url.database
                # Autocommit: a SELECT holds its snapshot only while it runs.
                self._now = sqlite3.connect(
                    str(path), isolation_level=None, check_same_thread=False
                )
                self._now.execute(f"PRAGMA busy_timeout={READ_NOW_BUSY_MS}")
            return self._now.execute(sql, [params[n] for n in names]).fetchall()
        except sqlite3.OperationalError:
            return None

    def plain_rows(
        self, conn: Connection, statement: Any, params: dict[str, Any]
    ) -> list[tuple[Any, ...]]:
        """Rows of ``statement`` as plain tuples, on a connection from :meth:`read`.

        For reads of many small rows: SQLAlchemy's Row objects are tracked by
        the garbage collector, plain tuples of plain values soon are not, so
        a read of ten thousand versions does not bring on a full collection.
        Values come back as SQLite stores them, as with :meth:`read_now`.
        """
        if self._reader is None:
            return [tuple(row) for row in conn.execute(statement, params)]
        sql, names = self._compiled(statement)
        cursor = conn.connection.driver_connection.execute(  # type: ignore[union-attr]
            sql, [params[n] for n in names]
        )
        return cursor.fetchall()  # type: ignore[no-any-return]

    def _compiled(self, statement: Any) -> tuple[str, tuple[str, ...]]:
        assert self._reader is not None
        compiled = self._now_sql.get(id(statement))
        if compiled is None or compiled[0] is not statement:
            done = statement.compile(dialect=self._reader.dialect)
            names = tuple(done.positiontup or ())
            compiled = (statement, str(done), names)
            self._now_sql[id(statement)] = compiled
        return compiled[1], compiled[2]

    async def ping(self) -> bool:
        """Whether the store answers; not queued behind the sessions on SQLite."""
        return await self.read(
            lambda conn: conn.exec_driver_sql("SELECT 1").scalar() == 1
        )

    async def close(self) -> None:
        """Close every connection; a session still open is waited for briefly."""
        self.closed = True
        pool = self.engine.pool
        if isinstance(pool, AsyncAdaptedQueuePool) and pool.checkedout():
            # A task cut short by the stop may still be rolling back; its
            # connection is closed only once it is back in the pool.
            returned = asyncio.Event()
            event.listen(pool, "checkin", lambda *_: returned.set())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_WAIT):
                    while pool.checkedout():
                        returned.clear()
                        await returned.wait()
            if pool.checkedout():
                log.warning("store_session_left_open", sessions=pool.checkedout())
        await self.engine.dispose()
        if self._now is not None:
            self._now.close()
            self._now = None
        if self._read_pool is not None:
            # Not on the event loop's thread: a read may be waiting for a lock.
            self._read_pool.shutdown(wait=False, cancel_futures=True)
            await asyncio.to_thread(self._read_pool.shutdown, wait=True)
        if self._reader is not None:
            self._reader.dispose()
