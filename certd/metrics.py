"""Prometheus metrics, served at ``GET /metrics``.

Each daemon has its own registry (several daemons can run in one test
process). Counters and histograms are updated where things happen; the
per-certificate gauges are read from the store when the endpoint is scraped,
so they are never stale and cost nothing between scrapes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from cryptography import x509
from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from sqlalchemy import select

from certd.store.models import Certificate

if TYPE_CHECKING:
    from certd.service import Daemon

__all__ = ["CONTENT_TYPE", "Metrics", "metrics_handler"]

# Most steps of an order take milliseconds against a near CA and seconds
# against a far one; propagation can take minutes.
_FAST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_SLOW_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class Metrics:
    """Every metric of one daemon."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.renewals = Counter(
            "certd_renewals",
            "Finished renewal attempts by result",
            ["result"],
            registry=r,
        )
        self.renewal_duration = Histogram(
            "certd_renewal_duration_seconds",
            "Wall time of renewal attempts",
            buckets=_SLOW_BUCKETS,
            registry=r,
        )
        self.acme_requests = Histogram(
            "certd_acme_request_duration_seconds",
            "Latency of HTTP requests to ACME servers",
            ["method"],
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.dns_propagation = Histogram(
            "certd_dns_propagation_seconds",
            "Time from publishing TXT values until every server answered them",
            buckets=_SLOW_BUCKETS,
            registry=r,
        )
        self.deploys = Counter(
            "certd_deploys",
            "Deployments of certificates by result",
            ["result"],
            registry=r,
        )
        self.hooks = Counter(
            "certd_deploy_hooks", "Deploy hook runs by result", ["result"], registry=r
        )
        self.webhooks = Counter(
            "certd_webhook_deliveries",
            "Webhook deliveries by result",
            ["result"],
            registry=r,
        )
        self.events = Counter(
            "certd_events", "Events raised by kind", ["kind"], registry=r
        )
        self.scheduler_lag = Gauge(
            "certd_scheduler_lag_seconds",
            "How late the renewal scheduler started its last run",
            registry=r,
        )
        self.scheduler_running = Gauge(
            "certd_scheduler_running", "1 while the renewal scheduler runs", registry=r
        )
        self.jobs_running = Gauge("certd_jobs_running", "Jobs running now", registry=r)
        self.renewals_running = Gauge(
            "certd_renewals_running", "Renewals running now", registry=r
        )
        self.expiry = Gauge(
            "certd_certificate_expiry_seconds",
            "Seconds until the certificate expires (negative once expired)",
            ["certificate"],
            registry=r,
        )
        self.next_renewal = Gauge(
            "certd_certificate_next_renewal_timestamp_seconds",
            "When the next renewal attempt is due (Unix time)",
            ["certificate"],
            registry=r,
        )
        self.failures = Gauge(
            "certd_certificate_renewal_failures",
            "Renewal failures in a row",
            ["certificate"],
            registry=r,
        )
        self._not_after: dict[str, datetime | None] = {}

    def http_trace(self) -> aiohttp.TraceConfig:
        """A trace config that times every request of a client session."""
        trace = aiohttp.TraceConfig()

        async def started(
            _session: aiohttp.ClientSession,
            context: SimpleNamespace,
            _params: aiohttp.TraceRequestStartParams,
        ) -> None:
            context.started = time.monotonic()

        async def ended(
            _session: aiohttp.ClientSession,
            context: SimpleNamespace,
            params: aiohttp.TraceRequestEndParams | aiohttp.TraceRequestExceptionParams,
        ) -> None:
            if hasattr(context, "started"):
                self.acme_requests.labels(params.method).observe(
                    time.monotonic() - context.started
                )

        trace.on_request_start.append(started)
        trace.on_request_end.append(ended)
        trace.on_request_exception.append(ended)
        return trace

    def _leaf_not_after(self, pem: str) -> datetime | None:
        digest = hashlib.sha256(pem.encode()).hexdigest()
        if digest not in self._not_after:
            try:
                leaf = x509.load_pem_x509_certificate(pem.encode())
                self._not_after[digest] = leaf.not_valid_after_utc
            except ValueError:
                self._not_after[digest] = None
        return self._not_after[digest]

    async def refresh(self, daemon: Daemon) -> None:
        """Read the per-certificate gauges and the job count from the daemon."""
        now = datetime.now(UTC)
        wanted = select(
            Certificate.name,
            Certificate.certificate,
            Certificate.next_attempt_at,
            Certificate.failure_count,
        ).where(
            Certificate.cert_type == "CERTIFICATE",
            # Revoked on purpose: its end is no longer a date to alert on.
            Certificate.revoked.is_(False),
        )
        # Beside the sessions: a scrape does not queue behind job writes.
        rows = await daemon.db.read(lambda conn: conn.execute(wanted).all())
        for gauge in (self.expiry, self.next_renewal, self.failures):
            gauge.clear()
        seen: set[str] = set()
        for name, pem, next_attempt_at, failure_count in rows:
            seen.add(hashlib.sha256((pem or "").encode()).hexdigest())
            not_after = self._leaf_not_after(pem or "")
            if not_after is not None:
                self.expiry.labels(name).set((not_after - now).total_seconds())
            if next_attempt_at is not None:
                self.next_renewal.labels(name).set(next_attempt_at.timestamp())
            self.failures.labels(name).set(failure_count)
        # forget certificates that were replaced, so the cache stays small
        for digest in set(self._not_after) - seen:
            del self._not_after[digest]
        self.jobs_running.set(len(daemon.jobs.running))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def metrics_handler(
    daemon: Daemon,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The ``GET /metrics`` handler: refresh the gauges, then render everything."""

    async def handle(request: web.Request) -> web.Response:
        await daemon.metrics.refresh(daemon)
        return web.Response(
            body=daemon.metrics.render(), headers={"Content-Type": CONTENT_TYPE}
        )

    return handle
