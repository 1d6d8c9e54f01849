"""Events: what happened to certificates and CAs, logged, stored and sent on.

An event is a row of the ``event`` table, written where possible in the same
transaction as the change it reports, so that a stored renewal always has its
event. Once committed it is logged, handed to in-process subscribers (the
future WebSocket ``core.subscribe`` reads from one) and posted to the
configured webhooks. Delivery never blocks or fails the change itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from certd.config import WebhookConfig
from certd.store.models import Event, utcnow

if TYPE_CHECKING:
    from certd.service import Daemon

log = structlog.get_logger(__name__)

# Every kind certd raises, with its severity.
KINDS: dict[str, str] = {
    "certificate.issued": "info",
    "certificate.renewed": "info",
    "certificate.renewal_failed": "warning",
    "certificate.renewal_failing": "error",
    "certificate.expiring": "warning",
    "certificate.expired": "error",
    "certificate.revoked": "warning",
    "certificate.deployed": "info",
    "certificate.deploy_failed": "warning",
    "ca.expiring": "warning",
    "ca.expired": "error",
}

_LOG_LEVELS = {"info": "info", "warning": "warning", "error": "error"}
# Client errors other than these mean the webhook will never take the event.
_RETRYABLE_4XX = frozenset({408, 425, 429})


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
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None

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
        """Add an event to the caller's transaction; deliver it after the commit."""
        row = Event(
            kind=kind,
            severity=severity or KINDS.get(kind, "info"),
            certificate_id=certificate_id,
            subject=subject,
            message=message,
            data=data or {},
            created_at=utcnow(),
        )
        session.add(row)
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
        """Log a committed event and hand it to subscribers and webhooks."""
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
        for hook in self.daemon.config.events.webhooks:
            if not hook.kinds or entry["kind"] in hook.kinds:
                task = asyncio.create_task(self._post(hook, entry))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def subscribe(
        self, kinds: list[str] | None = None, maxsize: int = 1000
    ) -> Subscription:
        """A new subscription to events of ``kinds`` (all when None)."""
        subscription = Subscription(self, frozenset(kinds) if kinds else None, maxsize)
        self.subscribers.add(subscription)
        return subscription

    async def _post(self, hook: WebhookConfig, entry: dict[str, Any]) -> None:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession()
        headers = {"Content-Type": "application/json", **hook.headers}
        attempts = hook.retries + 1
        for attempt in range(1, attempts + 1):
            error: str
            try:
                async with self._http.post(
                    hook.url,
                    json=entry,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=hook.timeout),
                ) as response:
                    if response.status < 300:
                        log.info(
                            "webhook_delivered",
                            url=hook.url,
                            kind=entry["kind"],
                            event_id=entry["id"],
                            attempt=attempt,
                        )
                        self.daemon.metrics.webhooks.labels("delivered").inc()
                        return
                    error = f"HTTP {response.status}"
                    retryable = response.status >= 500 or (
                        response.status in _RETRYABLE_4XX
                    )
            except (TimeoutError, aiohttp.ClientError) as exc:
                error = str(exc) or type(exc).__name__
                retryable = True
            log.warning(
                "webhook_delivery_failed",
                url=hook.url,
                kind=entry["kind"],
                event_id=entry["id"],
                attempt=attempt,
                error=error,
            )
            if not retryable or attempt == attempts:
                break
            await asyncio.sleep(hook.retry_base * 2 ** (attempt - 1))
        self.daemon.metrics.webhooks.labels("failed").inc()
        log.error(
            "webhook_given_up", url=hook.url, kind=entry["kind"], event_id=entry["id"]
        )

    async def prune(self, now: datetime, retention_days: int) -> int:
        """Delete events older than the retention; return how many."""
        async with self.daemon.db.session() as session:
            result = await session.execute(
                delete(Event).where(
                    Event.created_at < now - timedelta(days=retention_days)
                )
            )
        return result.rowcount or 0  # type: ignore[attr-defined]

    async def close(self) -> None:
        """Stop pending webhook deliveries and close their HTTP session."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._http is not None:
            await self._http.close()
