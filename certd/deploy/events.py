"""Events: what happened to certificates and CAs, logged, stored and sent on.

An event is a row of the ``event`` table, written where possible in the same
transaction as the change it reports, so that a stored renewal always has its
event. Once committed it is logged, handed to in-process subscribers (the
future WebSocket ``core.subscribe`` reads from one) and posted to the
configured webhooks. Delivery never blocks or fails the change itself.

Each webhook post still to be made is a ``webhook_delivery`` row, added in the
event's transaction (a transactional outbox): one task posts the rows that are
due, so a restart, or a crash between the commit and the post, delays a
notification but never loses it. A hook may receive an event twice (a crash
after the post, before its row is deleted), never zero times.

A webhook URL often carries the hook's secret (in its path, query or user
info), so neither the store nor a log line holds one: a row names its hook by
:func:`hook_digest`, a log line by :func:`hook_label`. The digest is keyed (a
key derived from the master key), since a plain hash of a URL whose secret is
a word or a short token lets whoever reads the store or the logs test guesses
at it. Rows of an earlier release, named by the plain SHA-256, are renamed
when the daemon starts, and a master key rotation renames every row in the
transaction that re-encrypts the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

import aiohttp
import structlog
from sqlalchemy import case, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from yarl import URL

from certd import __version__
from certd.config import WebhookConfig
from certd.retry_after import parse_retry_after
from certd.store.crypto import Keyring, keyring_of
from certd.store.models import Event, WebhookDelivery, utcnow

if TYPE_CHECKING:
    from certd.service import Daemon

log = structlog.get_logger(__name__)

# Every kind certd raises, with its severity.
KINDS: dict[str, str] = {
    "certificate.issued": "info",
    "certificate.renewed": "info",
    "certificate.renewal_failed": "warning",
    "certificate.renewal_failing": "error",
    "certificate.renewal_blocked": "warning",
    "certificate.expiring": "warning",
    "certificate.expired": "error",
    "certificate.revoked": "warning",
    "certificate.deployed": "info",
    "certificate.deploy_failed": "warning",
    "ca.expiring": "warning",
    "ca.expired": "error",
    "authority.revoked": "warning",
    "authority.released": "info",
}

_LOG_LEVELS = {"info": "info", "warning": "warning", "error": "error"}
# Client errors other than these mean the webhook will never take the event.
_RETRYABLE_4XX = frozenset({408, 425, 429})
# Posts to one hook under way at once. Each hook has its own, so a slow one
# holds up only its own events.
_PER_HOOK = 4
# The longest the delivery task sleeps: a row another daemon on the same store
# added, or one whose claim lapsed, is looked at within this.
_POLL = 60.0
# After a failure to read or write the store, before the task tries again.
_STORE_RETRY = 5.0
# A row being posted is claimed for the hook's timeout plus this: another
# process leaves it alone meanwhile, and a process killed mid-post leaves a
# claim that lapses on its own.
_CLAIM_MARGIN = 10.0
# The longest wait between two attempts, however many retries a hook allows.
_MAX_DELAY = 86400.0
# How long deliveries to a hook this daemon has no config for are left to the
# other daemons sharing the store (see _drop_unconfigured).
_FOREIGN_HOOK_GRACE = timedelta(days=1)


def hook_digest(url: str, key: bytes) -> str:
    """How the store names a webhook: the hex HMAC-SHA256 of its URL under ``key``.

    ``key`` is the keyring's ``hook_key``, derived from the master key.
    """
    return hmac.new(key, url.encode(), hashlib.sha256).hexdigest()


def plain_hook_digest(url: str) -> str:
    """The hex SHA-256 of a webhook URL: how earlier releases named the hook."""
    return hashlib.sha256(url.encode()).hexdigest()


def hook_label(url: str, key: bytes) -> str:
    """A webhook URL fit for a log line: its origin and a digest of the whole.

    The user info, path and query are left out, as that is where services
    put a hook's token; the digest (the start of :func:`hook_digest`) tells
    apart two hooks on one host.
    """
    digest = hook_digest(url, key)[:8]
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        # An invalid host or port: nothing of it is shown rather than a guess.
        return f"{url.partition(':')[0]}://… #{digest}"
    if ":" in host:
        host = f"[{host}]"
    origin = f"{parts.scheme}://{host}" + ("" if port is None else f":{port}")
    return f"{origin}/… #{digest}"


async def rename_hooks(
    conn: AsyncConnection | AsyncSession, renames: dict[str, str]
) -> int:
    """Give delivery rows named ``old`` the name ``renames[old]``; return how many.

    One statement, so that the caller's transaction holds all or none of it.
    """
    if not renames:
        return 0
    result = await conn.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.hook.in_(list(renames)))
        .values(hook=case(renames, value=WebhookDelivery.hook))
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0  # type: ignore[attr-defined]


async def rekey_deliveries(
    conn: AsyncConnection, old: Keyring, new: Keyring, urls: Iterable[str]
) -> int:
    """Rename the rows of the webhooks at ``urls`` from ``old``'s key to ``new``'s.

    Run in a master key rotation's transaction: after it, rows named under
    the old key would match no configured hook and be dropped. Rows still
    named by a plain SHA-256 are renamed too. Returns how many rows.
    """
    renames: dict[str, str] = {}
    for url in urls:
        digest = hook_digest(url, new.hook_key)
        renames[hook_digest(url, old.hook_key)] = digest
        renames[plain_hook_digest(url)] = digest
    renamed = await rename_hooks(conn, renames)
    left = await conn.scalar(
        select(func.count(WebhookDelivery.id)).where(
            WebhookDelivery.hook.not_in(list(set(renames.values())))
        )
    )
    if renamed:
        log.info("webhook_deliveries_rekeyed", count=renamed)
    if left:
        log.warning(
            "webhook_deliveries_not_rekeyed",
            count=left,
            reason="their webhook is not in this configuration; "
            "the next start drops them",
        )
    return renamed


def _secret_parts(url: str) -> list[str]:
    """The pieces of ``url`` an error text must not show, longest first."""
    pieces = {url}
    with contextlib.suppress(ValueError):
        parts = urlsplit(url)
        query = f"?{parts.query}" if parts.query else ""
        pieces |= {
            parts.netloc.rpartition("@")[0],
            parts.path + query,
            parts.path,
            parts.query,
            parts.username or "",
            parts.password or "",
        }
    with contextlib.suppress(ValueError, TypeError):
        # aiohttp quotes the URL as yarl normalized it.
        parsed = URL(url)
        pieces |= {
            str(parsed),
            parsed.raw_path_qs,
            parsed.raw_path,
            parsed.raw_query_string,
            parsed.raw_user or "",
            parsed.raw_password or "",
        }
    # A one-character piece ("/") is no secret and would garble the text.
    return sorted((p for p in pieces if len(p) > 1), key=len, reverse=True)


class PostOutcome(NamedTuple):
    """How one post went: ``error`` is None when the hook took the event."""

    error: str | None = None
    retryable: bool = False
    # Seconds the hook asked to be left alone (Retry-After), if it did.
    retry_after: float | None = None


def _failure(exc: BaseException, hook: WebhookConfig) -> PostOutcome:
    """Why a post failed, without the URL's secrets, and whether to retry."""
    if isinstance(exc, aiohttp.InvalidURL):
        # aiohttp's text is the URL itself.
        return PostOutcome("the URL is not valid", False)
    if isinstance(exc, aiohttp.ClientResponseError):
        return PostOutcome(f"HTTP {exc.status} {exc.message}".strip(), True)
    if isinstance(exc, TimeoutError) and not str(exc):
        return PostOutcome(f"no answer within {hook.timeout:g} s", True)
    text = str(exc) or type(exc).__name__
    # Some aiohttp errors quote the URL (a connection timeout does).
    for piece in _secret_parts(hook.url):
        text = text.replace(piece, "…")
    return PostOutcome(text, True)


def _redirect_origin(response: aiohttp.ClientResponse) -> str:
    """ " to <scheme://host:port>" of a redirect's target; never its path or query."""
    try:
        target = response.url.join(URL(response.headers.get("Location", "")))
    except ValueError:
        return ""
    if not target.host:
        return ""
    return f" to {target.scheme}://{target.host}:{target.explicit_port or target.port}"


def event_entry(row: Event) -> dict[str, Any]:
    """An event as the API, subscribers and webhooks see it."""
    return {
        "id": row.id,
        "kind": row.kind,
        "severity": row.severity,
        "certificate_id": row.certificate_id,
        "subject": row.subject,
        "message": row.message,
        "data": row.data or {},
        "created_at": row.created_at.isoformat() if row.created_at else None,
    }


class Subscription:
    """Events for one listener, in order; a slow listener loses the oldest."""

    def __init__(
        self, bus: EventBus, kinds: frozenset[str] | None, maxsize: int
    ) -> None:
        self._bus = bus
        self.kinds = kinds
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize)
        self.dropped = 0

    def matches(self, kind: str) -> bool:
        return self.kinds is None or kind in self.kinds

    def offer(self, entry: dict[str, Any]) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(entry)

    async def get(self) -> dict[str, Any]:
        return await self.queue.get()

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            yield await self.queue.get()

    def close(self) -> None:
        self._bus.subscribers.discard(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    """Stores events and fans them out to subscribers and webhooks."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.subscribers: set[Subscription] = set()
        self._http: aiohttp.ClientSession | None = None
        self._runner: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        # Delivery ids being posted by this process, and how many per hook
        # (by its digest).
        self._posting: dict[int, asyncio.Task[None]] = {}
        self._busy: Counter[str] = Counter()
        # The hooks rows were last checked against (see _drop_unconfigured),
        # and when.
        self._checked_hooks: frozenset[str] | None = None
        self._pruned_at = datetime.min.replace(tzinfo=UTC)

    def stage(
        self,
        session: AsyncSession,
        kind: str,
        message: str,
        *,
        certificate_id: int | None = None,
        subject: str | None = None,
        data: dict[str, Any] | None = None,
        severity: str | None = None,
    ) -> Event:
        """Add an event and its webhook deliveries to the caller's transaction.

        Call :meth:`deliver` with the event after the commit.
        """
        now = utcnow()
        row = Event(
            kind=kind,
            severity=severity or KINDS.get(kind, "info"),
            certificate_id=certificate_id,
            subject=subject,
            message=message,
            data=data or {},
            created_at=now,
        )
        session.add(row)
        for digest in self._digests_for(kind):
            session.add(
                WebhookDelivery(
                    event=row,
                    hook=digest,
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                )
            )
        return row

    async def publish(
        self,
        kind: str,
        message: str,
        *,
        certificate_id: int | None = None,
        subject: str | None = None,
        data: dict[str, Any] | None = None,
        severity: str | None = None,
    ) -> dict[str, Any]:
        """Store an event in its own transaction and deliver it."""
        async with self.daemon.db.session() as session:
            row = self.stage(
                session,
                kind,
                message,
                certificate_id=certificate_id,
                subject=subject,
                data=data,
                severity=severity,
            )
            await session.flush()
            entry = event_entry(row)
        self.deliver(entry)
        return entry

    def deliver(self, entry: dict[str, Any] | Event) -> None:
        """Log a committed event, hand it to subscribers and post it now."""
        if isinstance(entry, Event):
            entry = event_entry(entry)
        level = _LOG_LEVELS.get(entry["severity"], "info")
        getattr(log, level)(
            "event_raised",
            kind=entry["kind"],
            certificate=entry["subject"],
            message=entry["message"],
        )
        self.daemon.metrics.events.labels(entry["kind"]).inc()
        for subscription in list(self.subscribers):
            if subscription.matches(entry["kind"]):
                subscription.offer(entry)
        if self._digests_for(entry["kind"]):
            # Its rows are committed: post them now rather than at the next poll.
            self._wake.set()

    def subscribe(
        self, kinds: list[str] | None = None, maxsize: int = 1000
    ) -> Subscription:
        """A new subscription to events of ``kinds`` (all when None)."""
        subscription = Subscription(self, frozenset(kinds) if kinds else None, maxsize)
        self.subscribers.add(subscription)
        return subscription

    def start(self) -> None:
        """Start posting webhook deliveries, first those a previous run left."""
        if self._runner is None or self._runner.done():
            self._wake.set()
            self._runner = asyncio.create_task(self._run(), name="webhook-deliveries")

    def _hook_key(self) -> bytes:
        """The key hooks are named under, from the keyring the store was unlocked with.

        Raises:
            SecretStoreError: the store is not unlocked yet.
        """
        engine = self.daemon.db.engine
        return keyring_of(getattr(engine, "sync_engine", engine).dialect).hook_key

    def _digests_for(self, kind: str) -> list[str]:
        digests: list[str] = []
        if not self.daemon.config.events.webhooks:
            return digests
        key = self._hook_key()
        for hook in self.daemon.config.events.webhooks:
            digest = hook_digest(hook.url, key)
            if (not hook.kinds or kind in hook.kinds) and digest not in digests:
                digests.append(digest)
        return digests

    def _hooks(self) -> dict[str, WebhookConfig]:
        """The configured hooks by the digest of their URL."""
        # A URL listed twice is one hook: its first entry's settings apply.
        hooks: dict[str, WebhookConfig] = {}
        if not self.daemon.config.events.webhooks:
            return hooks
        key = self._hook_key()
        for hook in self.daemon.config.events.webhooks:
            hooks.setdefault(hook_digest(hook.url, key), hook)
        return hooks

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                wait = await self._dispatch()
            except Exception as exc:
                log.error(
                    "webhook_deliveries_unreadable",
                    error=str(exc) or type(exc).__name__,
                    retry_in=_STORE_RETRY,
                )
                wait = _STORE_RETRY
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a
            # cancel that arrives as the wake-up is set, and close() would wait.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _dispatch(self) -> float:
        """Start posting the due deliveries; return the seconds until more are due."""
        hooks = self._hooks()
        now = utcnow()
        digests = frozenset(hooks)
        claimed: list[tuple[str, int, int, int]] = []
        shared = self.daemon.db.engine.dialect.name != "sqlite"
        async with self.daemon.db.session() as session:
            if self._checked_hooks != digests or (
                shared and now - self._pruned_at > _FOREIGN_HOOK_GRACE / 24
            ):
                # Before the drop, which would take rows of an earlier release.
                await self._rename_plain(session, hooks)
                await self._drop_unconfigured(session, digests, now, shared)
                self._pruned_at = now
            for digest, hook in hooks.items():
                free = _PER_HOOK - self._busy[digest]
                if free > 0:
                    rows = await self._claim(session, digest, hook, free, now)
                    claimed += [(digest, *row) for row in rows]
            entries = await self._entries(session, [row[2] for row in claimed])
            idle = [
                digest
                for digest in hooks
                if self._busy[digest] + sum(c[0] == digest for c in claimed) < _PER_HOOK
            ]
            next_due = await session.scalar(
                select(func.min(WebhookDelivery.next_attempt_at)).where(
                    WebhookDelivery.hook.in_(idle),
                    WebhookDelivery.id.not_in(
                        [*self._posting, *(c[1] for c in claimed)]
                    ),
                )
            )
        self._checked_hooks = digests
        # Posted only once the claims are committed.
        for digest, delivery_id, event_id, attempts in claimed:
            entry = entries.get(event_id)
            if entry is not None:
                self._start_post(
                    digest, hooks[digest], delivery_id, attempts + 1, entry
                )
        if next_due is None:
            return _POLL
        return min(_POLL, max(0.0, (next_due - utcnow()).total_seconds()))

    async def _rename_plain(
        self, session: AsyncSession, hooks: dict[str, WebhookConfig]
    ) -> None:
        """Rename the rows an earlier release named by a hook's plain SHA-256."""
        renames = {
            plain_hook_digest(hook.url): digest for digest, hook in hooks.items()
        }
        renamed = await rename_hooks(session, renames)
        if renamed:
            log.info("webhook_deliveries_rekeyed", count=renamed)

    async def _drop_unconfigured(
        self,
        session: AsyncSession,
        digests: frozenset[str],
        now: datetime,
        shared: bool,
    ) -> None:
        """Delete the deliveries to hooks this daemon has no config for.

        In a store several daemons share (PostgreSQL), another one may still
        have the hook (a config rolled out host by host): its deliveries are
        left to it for a day, and dropped only if none has taken them by then.
        """
        unknown = delete(WebhookDelivery).where(
            WebhookDelivery.hook.not_in(list(digests))
        )
        if shared:
            unknown = unknown.where(
                WebhookDelivery.created_at < now - _FOREIGN_HOOK_GRACE
            )
        dropped = await session.execute(
            unknown.returning(
                WebhookDelivery.hook, WebhookDelivery.event_id
            ).execution_options(synchronize_session=False)
        )
        for digest, event_id in dropped.all():
            # Its URL is no longer known: the digest's start, as its label had.
            log.warning(
                "webhook_delivery_dropped",
                hook=f"#{digest[:8]}",
                event_id=event_id,
                reason="the webhook is no longer configured",
            )

    async def _claim(
        self,
        session: AsyncSession,
        digest: str,
        hook: WebhookConfig,
        limit: int,
        now: datetime,
    ) -> Sequence[tuple[int, int, int]]:
        """Claim up to ``limit`` due deliveries to ``hook``: (id, event_id, attempts)."""
        due = (
            select(WebhookDelivery.id)
            .where(
                WebhookDelivery.hook == digest,
                WebhookDelivery.next_attempt_at <= now,
                WebhookDelivery.id.not_in(list(self._posting)),
            )
            .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
            .limit(limit)
        )
        claim_until = now + timedelta(seconds=hook.timeout + _CLAIM_MARGIN)
        result = await session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id.in_(due.scalar_subquery()),
                # Asked again of the row as it is when updated: on PostgreSQL
                # a daemon sharing the store may have claimed it since the
                # subquery read it, and this UPDATE waited for its commit.
                WebhookDelivery.next_attempt_at <= now,
            )
            .values(next_attempt_at=claim_until)
            .returning(
                WebhookDelivery.id, WebhookDelivery.event_id, WebhookDelivery.attempts
            )
            .execution_options(synchronize_session=False)
        )
        return sorted((row[0], row[1], row[2]) for row in result)

    async def _entries(
        self, session: AsyncSession, event_ids: list[int]
    ) -> dict[int, dict[str, Any]]:
        if not event_ids:
            return {}
        rows = await session.scalars(select(Event).where(Event.id.in_(event_ids)))
        return {row.id: event_entry(row) for row in rows}

    def _start_post(
        self,
        digest: str,
        hook: WebhookConfig,
        delivery_id: int,
        attempt: int,
        entry: dict[str, Any],
    ) -> None:
        task = asyncio.create_task(self._attempt(hook, delivery_id, attempt, entry))
        self._posting[delivery_id] = task
        self._busy[digest] += 1

        def done(_: asyncio.Task[None]) -> None:
            self._posting.pop(delivery_id, None)
            self._busy[digest] -= 1
            # A slot of this hook is free again.
            self._wake.set()

        task.add_done_callback(done)

    async def _attempt(
        self,
        hook: WebhookConfig,
        delivery_id: int,
        attempt: int,
        entry: dict[str, Any],
    ) -> None:
        """Post one delivery once and record the outcome in its row."""
        bound = log.bind(
            hook=hook_label(hook.url, self._hook_key()),
            kind=entry["kind"],
            event_id=entry["id"],
        )
        outcome = await self._post(hook, entry)
        error, retryable = outcome.error, outcome.retryable
        if error is None:
            bound.info("webhook_delivered", attempt=attempt)
            self.daemon.metrics.webhooks.labels("delivered").inc()
        else:
            bound.warning("webhook_delivery_failed", attempt=attempt, error=error)
        give_up = error is not None and (not retryable or attempt > hook.retries)
        if give_up:
            self.daemon.metrics.webhooks.labels("failed").inc()
            bound.error("webhook_given_up", attempts=attempt, error=error)
        try:
            # The event too: a row is this delivery only while it is that event's.
            this = (
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.event_id == entry["id"],
            )
            async with self.daemon.db.session() as session:
                if error is None or give_up:
                    await session.execute(delete(WebhookDelivery).where(*this))
                else:
                    backoff = hook.retry_base * 2 ** min(attempt - 1, 32)
                    delay = min(_MAX_DELAY, max(backoff, outcome.retry_after or 0.0))
                    await session.execute(
                        update(WebhookDelivery)
                        .where(*this)
                        .values(
                            attempts=attempt,
                            last_error=error,
                            next_attempt_at=utcnow() + timedelta(seconds=delay),
                        )
                    )
        except Exception as exc:
            # The claim lapses and the row is tried again: a hook may see the
            # event twice, never lose it.
            bound.error(
                "webhook_delivery_unrecorded",
                attempt=attempt,
                error=str(exc) or type(exc).__name__,
            )

    async def _post(self, hook: WebhookConfig, entry: dict[str, Any]) -> PostOutcome:
        """Post an event once and say how it went."""
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"certd/{__version__}",
            **hook.headers,
        }
        try:
            # Redirects are not followed: a 301-303 would turn the post into a
            # GET without the event, and another origin would get the headers.
            async with self._http.post(
                hook.url,
                json=entry,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=hook.timeout),
                allow_redirects=False,
            ) as response:
                status = response.status
                if status < 300:
                    return PostOutcome()
                if status < 400:
                    return PostOutcome(
                        f"HTTP {status}: the hook redirects"
                        f"{_redirect_origin(response)}; configure the URL it "
                        "redirects to",
                        False,
                    )
                return PostOutcome(
                    f"HTTP {status}",
                    status >= 500 or status in _RETRYABLE_4XX,
                    parse_retry_after(response.headers.get("Retry-After")),
                )
        except (TimeoutError, aiohttp.ClientError) as exc:
            return _failure(exc, hook)

    async def prune(self, now: datetime, retention_days: int) -> int:
        """Delete events older than the retention, and their deliveries; return how many."""
        cutoff = now - timedelta(days=retention_days)
        async with self.daemon.db.session() as session:
            # The foreign key would do this on SQLite with foreign keys on;
            # done here so that it holds on any store.
            await session.execute(
                delete(WebhookDelivery)
                .where(
                    WebhookDelivery.event_id.in_(
                        select(Event.id).where(Event.created_at < cutoff)
                    )
                )
                .execution_options(synchronize_session=False)
            )
            result = await session.execute(
                delete(Event).where(Event.created_at < cutoff)
            )
        return result.rowcount or 0  # type: ignore[attr-defined]

    async def close(self) -> None:
        """Stop the delivery task and the posts under way; the next start makes them.

        Takes a few seconds at most: a task that outlives its cancels is left
        behind and named in the log, and the claims are released only if the
        store answers in time.
        """
        runner, self._runner = self._runner, None
        posting: set[int] = set()
        seen: set[asyncio.Task[None]] = set()
        # On Python 3.11 asyncio.wait_for returns normally, dropping the
        # cancel, when what it waits for ended in the same turn of the loop;
        # the runner waits for _wake so, and a post just ended sets it. The
        # runner then dispatches again (maybe starting posts) and sleeps up
        # to a minute: a task still running after a round is cancelled again.
        for _ in range(5):
            posting |= set(self._posting)
            pending = {
                task
                for task in (runner, *self._posting.values())
                if task is not None and not task.done()
            }
            if not pending:
                break
            seen |= pending
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=1.0)
        for task in seen:
            if task.done() and not task.cancelled():
                if (exc := task.exception()) is not None:
                    log.error(
                        "webhook_task_failed",
                        task=task.get_name(),
                        error=str(exc) or type(exc).__name__,
                    )
        left = [
            task.get_name()
            for task in (runner, *self._posting.values())
            if task is not None and not task.done()
        ]
        if left:
            log.error("webhook_tasks_left_running", tasks=sorted(left))
        if posting:
            try:
                async with asyncio.timeout(5.0):
                    await self._release(sorted(posting))
            except TimeoutError:
                # They lapse on their own after the hook's timeout.
                log.warning("webhook_claims_kept", error="the store did not answer")
        if self._http is not None:
            await self._http.close()

    async def _release(self, delivery_ids: list[int]) -> None:
        # Lift the claims of the posts cut short, so the next start makes
        # them at once instead of when the claims lapse.
        try:
            async with self.daemon.db.session() as session:
                await session.execute(
                    update(WebhookDelivery)
                    .where(WebhookDelivery.id.in_(delivery_ids))
                    .values(next_attempt_at=utcnow())
                )
        except Exception as exc:
            log.warning("webhook_claims_kept", error=str(exc) or type(exc).__name__)
