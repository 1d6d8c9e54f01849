"""ACME Renewal Information (RFC 9773): the CA's suggested renewal window.

The window is fetched with a plain GET from the directory's ``renewalInfo``
URL; the CA's Retry-After says when to ask again (kept between a minute and a
day, as §4.3 advises). A CA without ``renewalInfo`` simply has no window.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import aiohttp
import structlog
from cryptography import x509

from certd.renewal.policy import Window
from certd.retry_after import parse_retry_after

log = structlog.get_logger(__name__)

MIN_RETRY = timedelta(minutes=1)
MAX_RETRY = timedelta(days=1)
# How long a fetched directory is trusted before it is fetched again.
DIRECTORY_TTL = 3600.0


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def cert_id(certificate: x509.Certificate) -> str | None:
    """The ARI certificate identifier (§4.1), or None without an AKI keyIdentifier.

    It joins the issuer's key identifier and the serial number, each as
    base64url without padding; the serial is its DER INTEGER content, so a
    serial with the high bit set keeps its leading zero byte.
    """
    try:
        aki = certificate.extensions.get_extension_for_class(
            x509.AuthorityKeyIdentifier
        ).value
    except x509.ExtensionNotFound:
        return None
    if aki.key_identifier is None:
        return None
    serial = certificate.serial_number
    serial_der = serial.to_bytes((serial.bit_length() + 8) // 8, "big")
    return f"{_b64url(aki.key_identifier)}.{_b64url(serial_der)}"


@dataclass(frozen=True)
class RenewalInfo:
    """A suggested window and when to ask again."""

    window: Window | None
    next_fetch_at: datetime
    explanation_url: str | None = None


def _clamp_retry(seconds: float | None, default: timedelta) -> timedelta:
    if seconds is None:
        return default
    return min(max(timedelta(seconds=seconds), MIN_RETRY), MAX_RETRY)


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


class AriClient:
    """Fetches renewal information over the daemon's HTTP session."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self._directories: dict[str, tuple[float, str | None]] = {}

    async def renewal_info_url(self, directory: str) -> str | None:
        """The directory's ``renewalInfo`` URL, or None when the CA has none.

        Raises:
            aiohttp.ClientError, TimeoutError: the directory cannot be fetched.
        """
        cached = self._directories.get(directory)
        if cached is not None and time.monotonic() - cached[0] < DIRECTORY_TTL:
            return cached[1]
        async with self.session.get(directory) as response:
            response.raise_for_status()
            body = await response.json(content_type=None)
        url = body.get("renewalInfo") if isinstance(body, dict) else None
        url = url if isinstance(url, str) else None
        self._directories[directory] = (time.monotonic(), url)
        return url

    async def fetch(
        self,
        directory: str,
        certificate: x509.Certificate,
        now: datetime,
        default_interval: timedelta,
    ) -> RenewalInfo | None:
        """The CA's window for ``certificate``; None when the CA has no ARI.

        A failed fetch is logged and answered with "no window, ask again
        later", never raised: ARI is advice, and renewal works without it.
        """
        identifier = cert_id(certificate)
        if identifier is None:
            return None
        try:
            base = await self.renewal_info_url(directory)
            if base is None:
                return None
            async with self.session.get(f"{base.rstrip('/')}/{identifier}") as reply:
                retry = parse_retry_after(reply.headers.get("Retry-After"), now)
                if reply.status >= 400:
                    log.warning(
                        "renewal_info_refused", directory=directory, status=reply.status
                    )
                    return RenewalInfo(
                        None, now + _clamp_retry(retry, default_interval)
                    )
                body = await reply.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning(
                "renewal_info_failed", directory=directory, error=str(exc) or repr(exc)
            )
            return RenewalInfo(None, now + default_interval)
        window = body.get("suggestedWindow") if isinstance(body, dict) else None
        start = _parse_time(window.get("start")) if isinstance(window, dict) else None
        end = _parse_time(window.get("end")) if isinstance(window, dict) else None
        explanation = body.get("explanationURL") if isinstance(body, dict) else None
        next_fetch = now + _clamp_retry(retry, default_interval)
        if start is None or end is None or end < start:
            log.warning("renewal_info_malformed", directory=directory)
            return RenewalInfo(None, next_fetch)
        return RenewalInfo(
            Window(start, end),
            next_fetch,
            explanation if isinstance(explanation, str) else None,
        )
