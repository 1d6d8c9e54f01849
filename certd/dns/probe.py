"""A dry run of DNS-01 against one provider, for testing an authenticator."""

from __future__ import annotations

import secrets
import time
from typing import Any

import structlog

from certd.dns.base import DNSProvider, normalize_name
from certd.dns.settings import PropagationSettings
from certd.errors import CertdError

log = structlog.get_logger("certd.dns")


async def probe_provider(
    provider: DNSProvider, fqdn: str, settings: PropagationSettings
) -> dict[str, Any]:
    """Publish a random TXT value at fqdn, wait until it is visible, remove it.

    ``fqdn`` is the record name, e.g. ``_acme-challenge.www.example.org``. The
    result holds the name written (after CNAMEs), the zone, the seconds each
    step took and the per-server propagation timing.

    Raises:
        CertdError: the step that failed (provider, lookup or propagation error).
    """
    from certd.dns.resolve import follow_cname, wait_for_txt

    value = secrets.token_urlsafe(32)
    timings: dict[str, float] = {}
    started = clock = time.monotonic()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.monotonic()
        timings[step] = round(now - clock, 4)
        clock = now

    name = normalize_name(fqdn)
    target = await follow_cname(name, settings) if settings.follow_cnames else name
    lap("follow_cname")
    zone = await provider.find_zone(target)
    lap("find_zone")
    await provider.add_txt(zone, target, value)
    lap("add_txt")
    try:
        propagation = await wait_for_txt(zone, target, {value}, settings)
        lap("propagation")
    except CertdError:
        # The value must not stay behind; the wait's error is the one to report.
        try:
            await provider.remove_txt(zone, target, value)
        except CertdError as cleanup:
            log.warning(
                "txt_record_removal_failed",
                provider=provider.name,
                fqdn=target,
                error=cleanup.message,
            )
        raise
    await provider.remove_txt(zone, target, value)
    lap("remove_txt")

    log.info("provider_probed", provider=provider.name, fqdn=target, zone=zone)
    return {
        "fqdn": name,
        "target": target,
        "zone": zone,
        "timings": timings,
        "total": round(time.monotonic() - started, 4),
        "servers": propagation["servers"],
    }
