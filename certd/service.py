"""The daemon: starts its parts in order, serves, and stops them in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import grp
import os
import re
import secrets
import signal
import socket
import ssl
import stat
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from certd import __version__
from certd.api.auth import ApiKeys
from certd.api.dispatch import Dispatcher
from certd.api.http import build_app
from certd.api.jobs import JobManager
from certd.api.ratelimit import AuthFailureLimiter
from certd.api.registry import Registry, Service
from certd.config import Config, load_config
from certd.deploy.deployer import Deployer
from certd.deploy.events import EventBus
from certd.errors import CertdError, ConflictError, ValidationError
from certd.metrics import Metrics, metrics_handler
from certd.renewal.issuance import Issuer
from certd.renewal.scheduler import RenewalEngine
from certd.store.db import Database
from certd.store.masterkey import state_lock, unlock_store
from certd.store.nodes import NodePresence, presence_lock
from certd.systemd import Notifier
from certd.tls import ServerTLS
from certd.workers import Workers

log = structlog.get_logger(__name__)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
# A whole stop stays under the systemd unit's TimeoutStopSec (30 s), after
# which the daemon is killed with its work half put away.
STOP_BUDGET = 25.0
# The longest each step of a stop may take before it is cut short; a step
# always gets MIN_STEP, however little of the budget is left, so that the
# store is closed and the state lock released even after a slow step.
STOP_STEPS: dict[str, float] = {
    "renewal": 8.0,  # a running tick or scan gets 5 s to reach its next batch
    "jobs": 6.0,  # JobManager.shutdown waits 5 s for the cancelled jobs
    "service": 3.0,
    "listeners": 8.0,  # aiohttp waits 5 s for the requests under way
    "events": 8.0,
    "http": 3.0,
    "presence": 2.0,
    "store": 5.0,
}
MIN_STEP = 1.0
# After a step was cut short: how long it is given to end once cancelled,
# and how many times it is cancelled (a cancel can be dropped, see
# EventBus.close) before it is left running.
CANCEL_WAIT = 0.5
CANCEL_ROUNDS = 3
# Held by the running daemon (its pid inside), beside the store in the state directory.
DAEMON_LOCK_FILE = "daemon.lock"
# This daemon's node id, made at its first start, in the state directory.
NODE_ID_FILE = "node-id"
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _remove_socket(path: Path) -> None:
    # A socket file left behind makes clients fail with "connection refused"
    # instead of "no such file", which reads as a hung daemon.
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _socket_in_use(path: Path) -> bool:
    """Whether a process listens on the unix socket ``path``.

    A listener too busy to accept within the probe's second counts as one.
    """
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (TimeoutError, BlockingIOError):  # its backlog is full
        return True
    except OSError:  # nothing listens there any more
        return False
    finally:
        probe.close()
    return True


def service_classes() -> list[type[Service]]:
    from certd.api.namespaces import SERVICES

    return SERVICES


@contextlib.contextmanager
def _daemon_lock(state_dir: Path) -> Iterator[None]:
    """Hold ``state_dir`` for this daemon; refuse if another daemon holds it.

    Raises:
        ConflictError: another process serves the directory (its pid named).
    """
    # Not through a symbolic link: the pid would be written wherever it points.
    fd = os.open(
        state_dir / DAEMON_LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600
    )
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            raise ConflictError(
                f"another certd (pid {holder or 'unknown'}) serves {state_dir}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def node_id(state_dir: Path) -> str:
    """This daemon's id among the daemons sharing a store; made on first use.

    Kept in the state directory, so it lasts across restarts (a daemon
    recovers the jobs its earlier run left behind, and takes back its own
    renewal leases) and differs between hosts, each with its own directory.
    Random rather than the host name, which may change or repeat; the name
    is only a prefix, for people reading job rows.

    Raises:
        CertdError: the file holds something that is not a node id.
    """
    path = state_dir / NODE_ID_FILE
    with contextlib.suppress(FileNotFoundError):
        found = path.read_text(errors="replace").strip()
        if found and not _NODE_ID.fullmatch(found):
            raise CertdError(
                f"{path} does not hold a node id (letters, digits, '.', '_' or "
                "'-', at most 64): remove it to have a new one made"
            )
        if found:
            return found
    host = re.sub(r"[^A-Za-z0-9.-]", "", socket.gethostname())[:40] or "certd"
    made = f"{host}-{secrets.token_hex(8)}"
    # Called under the daemon lock: no other process writes it meanwhile.
    partial = path.with_name(NODE_ID_FILE + ".new")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(made + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)
    log.info("node_id_created", node=made, path=str(path))
    return made


class Daemon:
    """Holds the store, the job manager, the API and the outbound HTTP session."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.db = Database(config.store.url())
        self.api_keys = ApiKeys(self.db)
        self.jobs = JobManager(self.db, config.server.max_running_jobs)
        # Set at start from the state directory (node_id).
        self.node: str | None = None
        # This daemon's row among those using the store, set at start.
        self.presence: NodePresence | None = None
        self.registry = Registry()
        self.metrics = Metrics()
        self.events = EventBus(self)
        self.deployer = Deployer(self)
        self.renewal = RenewalEngine(self)
        self.extra_routes: list[tuple[str, str, Callable[..., Any]]] = []
        if config.metrics.enabled:
            self.extra_routes.append(("GET", "/metrics", metrics_handler(self)))
        self.services: dict[str, Service] = {}
        for cls in service_classes():
            service = cls(self)
            self.services[cls.namespace] = service
            self.registry.add_service(service)
        self.dispatcher = Dispatcher(
            self.registry, self.jobs, config.server.max_batch_size
        )
        self.http: aiohttp.ClientSession | None = None
        self.workers = Workers()
        self.issuer = Issuer(self)
        self.started = False
        self._stack = AsyncExitStack()
        self._stop_deadline: float | None = None
        self._runner: web.AppRunner | None = None
        self.http_port: int | None = None
        self.auth_limiter = AuthFailureLimiter(
            config.server.auth_failure_burst, config.server.auth_failure_refill_seconds
        )
        self.tls: ServerTLS | None = None

    def ssl_context(self) -> ssl.SSLContext:
        """Trust for outbound HTTPS: the system store plus the configured ACME CA bundle."""
        context = ssl.create_default_context()
        bundle = self.config.acme.ca_bundle
        if bundle:
            try:
                context.load_verify_locations(cafile=str(bundle))
            except (OSError, ssl.SSLError) as exc:
                reason = getattr(exc, "strerror", None) or str(exc)
                raise ValidationError.single(
                    "acme.ca_bundle",
                    f"cannot load CA certificates from {bundle}: {reason}",
                ) from None
        return context

    async def start(self) -> None:
        """Open the store and start serving; on failure, undo what was started."""
        try:
            await self._start()
        except BaseException:
            self._stop_deadline = asyncio.get_running_loop().time() + STOP_BUDGET
            await self._stack.aclose()
            raise

    async def _start(self) -> None:
        # Keys and credentials live in the state directory: nothing certd
        # creates there may be readable by others, not even for a moment.
        os.umask(0o077)
        state_dir = self.config.store.state_dir
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._tighten_state_dir(state_dir)
        # One daemon per state directory: a second would recover (abort) the
        # first one's running jobs and renew the same certificates.
        self._stack.enter_context(_daemon_lock(state_dir))
        self.node = self.jobs.node = node_id(state_dir)
        # Shared with the certd commands, but never held during a key rotation.
        self._stack.enter_context(state_lock(state_dir, exclusive=False))
        await self.db.migrate()
        self._stack.push_async_callback(self._stop_step, "store", self.db.close)
        self.presence = NodePresence(self.db, self.node, state_dir / NODE_ID_FILE)
        # One daemon at a time: two starting together each see the other's row.
        # Before its jobs are recovered: a second process with this node id,
        # or with another master key, is refused before it changes anything.
        async with presence_lock(self.db):
            keyring = await unlock_store(
                self.db, state_dir, self.config.store.master_key_file
            )
            await self.presence.join(keyring.key_id)
            self._stack.push_async_callback(
                self._stop_step, "presence", self.presence.leave
            )
        self.presence.start_heartbeat()
        await self.jobs.recover()
        self.http = self._open_http()
        self._stack.callback(self.workers.close)
        for service in self.services.values():
            starter = getattr(service, "on_start", None)
            if starter is not None:
                await starter()
        self._stack.push_async_callback(self._stop_step, "events", self.events.close)
        self.events.start()
        # Interrupted renewals are resumed before callers can ask about them,
        # so that a caller never sees a half-renewed certificate as idle.
        await self.renewal.start()
        await self._start_listeners()
        self.started = True
        log.info("daemon_started", version=__version__, http_port=self.http_port)

    def _tighten_state_dir(self, state_dir: Path) -> None:
        # An existing directory keeps its mode through mkdir; narrow it, except
        # for the search bit a socket group needs to reach a socket inside it.
        server = self.config.server
        socket_inside = (
            server.unix_socket is not None and server.unix_socket.parent == state_dir
        )
        wanted = 0o710 if server.socket_group and socket_inside else 0o700
        info = state_dir.stat()
        if info.st_uid == os.geteuid() and info.st_mode & 0o777 & ~wanted:
            state_dir.chmod(wanted)
            log.warning(
                "state_dir_mode_tightened", path=str(state_dir), mode=oct(wanted)
            )

    async def _start_listeners(self) -> None:
        server = self.config.server
        self._runner = web.AppRunner(
            build_app(self), access_log=None, shutdown_timeout=5
        )
        await self._runner.setup()
        self._stack.push_async_callback(
            self._stop_step, "listeners", self._runner.cleanup
        )
        if server.http_enabled:
            if server.tls_certificate:
                self.tls = ServerTLS(
                    server.tls_certificate, self.config.store.state_dir
                )
                await self.tls.load(self.db)
            if server.http_host not in LOOPBACK_HOSTS:
                log.warning(
                    "http_beyond_loopback",
                    host=server.http_host,
                    hint="the API manages private keys; expose it only behind TLS "
                    "and a firewall",
                )
            site = web.TCPSite(
                self._runner,
                server.http_host,
                server.http_port,
                ssl_context=self.tls.context if self.tls else None,
            )
            await site.start()
            server_ = site._server
            sockets = getattr(server_, "sockets", None) or []
            self.http_port = (
                sockets[0].getsockname()[1] if sockets else server.http_port
            )
            log.info(
                "http_listening",
                host=server.http_host,
                port=self.http_port,
                tls=self.tls is not None,
            )
        if server.unix_socket:
            await self._start_unix(server.unix_socket)

    async def _start_unix(self, path: Path) -> None:
        server = self.config.server
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        try:
            existing = path.lstat().st_mode
        except FileNotFoundError:
            existing = None
        if existing is not None:
            if not stat.S_ISSOCK(existing):
                raise ValidationError.single(
                    "server.unix_socket", f"{path} exists and is not a socket"
                )
            if _socket_in_use(path):
                # Binding over it would cut that daemon off from its clients,
                # and our stop would delete its socket file.
                raise ValidationError.single(
                    "server.unix_socket",
                    f"another process already listens on {path}; stop it or "
                    "give this daemon its own socket",
                )
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # left behind by a daemon that was killed
        # Create the socket with a tight umask so it is never wider than asked,
        # not even between bind() and chmod().
        old_umask = os.umask(0o177 if server.socket_mode == 0o600 else 0o117)
        try:
            site = web.UnixSite(self._runner, str(path))  # type: ignore[arg-type]
            await site.start()
        finally:
            os.umask(old_umask)
        self._stack.callback(_remove_socket, path)
        if server.socket_group:
            try:
                gid = grp.getgrnam(server.socket_group).gr_gid
            except KeyError:
                raise ValidationError.single(
                    "server.socket_group", f"no group named {server.socket_group!r}"
                ) from None
            os.chown(path, -1, gid)
        os.chmod(path, server.socket_mode)
        log.info("unix_listening", path=str(path), mode=f"{server.socket_mode:04o}")

    def _open_http(self) -> aiohttp.ClientSession:
        """The outbound HTTP session (ACME, renewal information), closed at stop."""
        connector = aiohttp.TCPConnector(ssl=self.ssl_context(), limit=100)
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.config.acme.request_timeout),
            headers={"User-Agent": f"certd/{__version__}"},
            trace_configs=[self.metrics.http_trace()],
        )
        self._stack.push_async_callback(self._stop_step, "http", session.close)
        return session

    async def readiness(self) -> dict[str, bool]:
        try:
            store = await self.db.ping()
        except Exception:
            store = False
        checks = {"store": store, "started": self.started}
        if self.config.renewal.enabled:
            checks["scheduler"] = self.renewal.running
        return checks

    async def reload(self) -> None:
        """Read the config file again and apply it; running jobs go on.

        The listeners and the store stay as they are until a restart; a bad
        file is reported and the running config is kept.
        """
        if self.tls is not None:
            # A renewed API certificate is served from the next connection on.
            await self.tls.reload(self.db)
        if self.config.source is None:
            log.warning("config_reload_skipped", reason="started without a file")
            return
        try:
            new = load_config(self.config.source)
        except CertdError as exc:
            log.error("config_reload_failed", error=exc.message)
            return
        needs_restart = [
            name
            for name in ("server", "store")
            if getattr(new, name) != getattr(self.config, name)
        ]
        # The outbound HTTP session is built with these at start; orders in
        # flight use it, so it is not replaced under them.
        for name in ("ca_bundle", "request_timeout"):
            if getattr(new.acme, name) != getattr(self.config.acme, name):
                needs_restart.append(f"acme.{name}")
                setattr(new.acme, name, getattr(self.config.acme, name))
        if needs_restart:
            log.warning("config_needs_restart", sections=needs_restart)
        new.server = self.config.server
        new.store = self.config.store
        if new.log != self.config.log:
            from certd.logs import configure_logging

            configure_logging(new.log.level, new.log.format)
        self.config = new
        await self.renewal.reconfigure()
        log.info("config_reloaded", path=str(new.source))

    async def stop(self) -> None:
        """Stop every part in reverse order; takes STOP_BUDGET seconds at most.

        A step that does not end in its time is cut short and named in the
        log (``stop_step_cut_short``); the steps after it still run.
        """
        log.info("daemon_stopping")
        started = asyncio.get_running_loop().time()
        self._stop_deadline = started + STOP_BUDGET
        self.started = False
        # no new renewals while the running ones are being stopped
        await self._stop_step("renewal", self.renewal.stop)
        await self._stop_step("jobs", self.jobs.shutdown)
        for service in reversed(list(self.services.values())):
            stopper = getattr(service, "on_stop", None)
            if stopper is not None:
                await self._stop_step("service", stopper, namespace=service.namespace)
        await self._stack.aclose()
        log.info(
            "daemon_stopped",
            seconds=round(asyncio.get_running_loop().time() - started, 3),
        )

    async def _stop_step(
        self, step: str, stop: Callable[[], Awaitable[object]], **context: str
    ) -> None:
        """Run one step of the stop within its time; log how it failed, never raise.

        Cancelling the stop cancels the step under way and propagates.
        """
        loop = asyncio.get_running_loop()
        limit = STOP_STEPS[step]
        if self._stop_deadline is not None:
            limit = max(MIN_STEP, min(limit, self._stop_deadline - loop.time()))
        task = asyncio.ensure_future(stop())
        try:
            done, _ = await asyncio.wait({task}, timeout=limit)
            if not done:
                log.warning(
                    "stop_step_cut_short", step=step, seconds=round(limit, 1), **context
                )
                for _ in range(CANCEL_ROUNDS):
                    task.cancel()
                    done, _ = await asyncio.wait({task}, timeout=CANCEL_WAIT)
                    if done:
                        break
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not task.done():
            log.error("stop_step_left_running", step=step, **context)
        elif not task.cancelled() and (exc := task.exception()) is not None:
            log.error(
                "stop_step_failed",
                step=step,
                error=str(exc) or type(exc).__name__,
                exc_info=exc,
                **context,
            )


def _status(daemon: Daemon) -> str:
    renewal = "renewal on" if daemon.renewal.running else "renewal off"
    return f"serving; {renewal}; {len(daemon.jobs.running)} job(s) running"


async def serve(config: Config, ready: asyncio.Event | None = None) -> None:
    """Run until SIGTERM or SIGINT; SIGHUP reloads the config file."""
    daemon = Daemon(config)
    notifier = Notifier()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[None]] = set()

    async def reload() -> None:
        notifier.reloading()
        await daemon.reload()
        notifier.reloaded(_status(daemon))

    def on_hangup() -> None:
        task = loop.create_task(reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    notifier.status("starting: opening the store")
    await daemon.start()
    notifier.ready(_status(daemon))
    notifier.start_watchdog()
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        notifier.stopping()
        await daemon.stop()
        await notifier.close()
