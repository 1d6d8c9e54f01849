"""A small JSON-over-HTTPS client shared by the REST providers.

It owns the aiohttp session, puts a timeout on every request and retries what
a vendor asks to be retried (429 and 5xx, honouring ``Retry-After`` within a
bound). Mapping a vendor's error bodies to messages stays with each provider.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog

from certd.dns.base import ProviderContext
from certd.errors import DNSProviderError
from certd.retry_after import parse_retry_after

log = structlog.get_logger("certd.dns")

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Repeating these after a lost connection cannot create a second record.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


def check_api_url(value: str, *, allow_http: bool = False) -> str:
    """An API base URL without trailing slash; https unless http is allowed.

    Plain http always passes for loopback hosts, where the tests run fakes.

    Raises:
        ValueError: not an http(s) URL, or http where it is not allowed.
    """
    parts = urlsplit(value.strip())
    if not parts.hostname:
        raise ValueError("must be a URL such as https://host/path")
    # Credentials travel in headers: plain HTTP only to this host or when the
    # vendor is usually self-hosted on a private network.
    if parts.scheme == "https" or (
        parts.scheme == "http" and (allow_http or parts.hostname in LOOPBACK_HOSTS)
    ):
        return value.strip().rstrip("/")
    raise ValueError("must be an https:// URL")


@dataclass(frozen=True)
class HttpReply:
    """A vendor's answer: status, parsed JSON body (or None) and raw text."""

    status: int
    body: Any
    text: str
    headers: Mapping[str, str]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class JsonHttpClient:
    """Requests against one vendor API base URL with fixed auth headers."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        headers: Mapping[str, str],
        context: ProviderContext,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self._headers = dict(headers)
        self._context = context
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"Accept": "application/json", **self._headers},
                timeout=aiohttp.ClientTimeout(total=self._context.request_timeout),
            )
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
    ) -> HttpReply:
        """Send one request, retrying 429/5xx and, when safe, lost connections.

        Raises:
            DNSProviderError: the vendor could not be reached, or kept failing.
        """
        url = self.base_url + path
        attempts = max(1, self._context.max_attempts)
        for attempt in range(1, attempts + 1):
            try:
                reply = await self._send(method, url, params, json)
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = str(exc) or type(exc).__name__
                if method not in IDEMPOTENT_METHODS or attempt == attempts:
                    raise DNSProviderError(
                        self.provider,
                        f"{method} {url} failed: {reason}",
                        retryable=True,
                    ) from exc
                delay = self._context.retry_delay(attempt)
            else:
                if reply.status not in RETRY_STATUSES or attempt == attempts:
                    return reply
                retry_after = parse_retry_after(reply.headers.get("Retry-After"))
                delay = self._context.retry_delay(attempt, retry_after)
                reason = f"HTTP {reply.status}"
            log.info(
                "http_request_retried",
                provider=self.provider,
                method=method,
                url=url,
                reason=reason,
                attempt=attempt,
                delay=delay,
            )
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises

    async def _send(
        self, method: str, url: str, params: Mapping[str, str | int] | None, json: Any
    ) -> HttpReply:
        session = self._get_session()
        async with session.request(method, url, params=params, json=json) as response:
            text = await response.text()
            try:
                body = await response.json(content_type=None) if text else None
            except ValueError:
                body = None
            return HttpReply(response.status, body, text, response.headers)

    async def aclose(self) -> None:
        """Close the session; a later request opens a new one."""
        if self._session is not None:
            await self._session.close()
            self._session = None
