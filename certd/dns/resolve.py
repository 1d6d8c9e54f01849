"""The DNS side of DNS-01 that no provider owns: CNAME following and propagation.

Every lookup goes through a dnspython resolver built from
:class:`PropagationSettings`: the configured resolvers when there are any, the
system's otherwise. Propagation is checked by asking each server directly,
because the CA validates against the zone's authoritative servers, not
against whatever a local cache believes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import dns.asyncquery
import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdatatype
import dns.resolver
import structlog

from certd.dns.base import normalize_name
from certd.dns.settings import PropagationSettings, Server
from certd.errors import DNSLookupError, DNSPropagationError

log = structlog.get_logger("certd.dns")

# Longer chains than this are a misconfiguration, not a delegation (resolvers
# give up around 8-16 hops as well).
MAX_CNAME_HOPS = 16


def make_resolver(settings: PropagationSettings) -> dns.asyncresolver.Resolver:
    """A non-caching resolver asking the configured resolvers, else the system's."""
    if settings.resolvers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [
            dns.nameserver.Do53Nameserver(host, port)
            for host, port in settings.resolvers
        ]
    else:
        resolver = dns.asyncresolver.Resolver()
    resolver.cache = None
    resolver.timeout = settings.query_timeout
    resolver.lifetime = settings.query_timeout * 2
    return resolver


def _absolute(name: str) -> str:
    return normalize_name(name) + "."


async def follow_cname(fqdn: str, settings: PropagationSettings) -> str:
    """The name at the end of fqdn's CNAME chain (fqdn itself without one).

    Delegating ``_acme-challenge`` with a CNAME is how a zone lets another zone
    (or another provider) answer its challenges (RFC 8555 §8.4 validates after
    following CNAMEs).

    Raises:
        DNSLookupError: a loop, an overlong chain, or a lookup that failed.
    """
    resolver = make_resolver(settings)
    chain = [normalize_name(fqdn)]
    for _ in range(MAX_CNAME_HOPS):
        current = chain[-1]
        try:
            answer = await resolver.resolve(
                _absolute(current), dns.rdatatype.CNAME, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN:
            return current
        except dns.exception.DNSException as exc:
            raise DNSLookupError(
                current,
                f"could not look up the CNAME of {current}: {exc}",
                retryable=True,
            ) from exc
        if answer.rrset is None:
            return current
        target = normalize_name(next(iter(answer.rrset)).target.to_text())
        if target in chain:
            raise DNSLookupError(
                current, f"CNAME loop at {current}: {' -> '.join([*chain, target])}"
            )
        chain.append(target)
        log.debug("cname_followed", name=current, target=target)
    raise DNSLookupError(
        fqdn, f"CNAME chain from {chain[0]} is longer than {MAX_CNAME_HOPS} hops"
    )


async def zone_of(fqdn: str, settings: PropagationSettings) -> str:
    """The zone fqdn is in, from the SOA the resolvers return for it or a parent.

    Raises:
        DNSLookupError: no SOA was found on the way up to the root.
    """
    name = normalize_name(fqdn)
    try:
        zone = await dns.asyncresolver.zone_for_name(
            _absolute(name), resolver=make_resolver(settings)
        )
    except dns.exception.DNSException as exc:
        raise DNSLookupError(
            name, f"could not find the zone of {name}: {exc}", retryable=True
        ) from exc
    return normalize_name(zone.to_text())


async def authoritative_servers(
    zone: str, settings: PropagationSettings
) -> list[Server]:
    """The addresses of zone's NS hosts, each with ``settings.nameserver_port``.

    A host's IPv4 addresses are used when it has any, its IPv6 ones otherwise:
    a dual-stack server serves the same data on both, and a host without an
    IPv6 route would otherwise wait out a timeout on every check.

    Raises:
        DNSLookupError: the zone has no NS records or none of them resolves.
    """
    resolver = make_resolver(settings)
    zone = normalize_name(zone)
    try:
        answer = await resolver.resolve(_absolute(zone), dns.rdatatype.NS)
    except dns.exception.DNSException as exc:
        raise DNSLookupError(
            zone, f"could not look up the NS records of {zone}: {exc}", retryable=True
        ) from exc
    hosts = sorted({normalize_name(rdata.target.to_text()) for rdata in answer})

    addresses: list[str] = []
    for host in hosts:
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            try:
                found = await resolver.resolve(
                    _absolute(host), rdtype, raise_on_no_answer=False
                )
            except dns.resolver.NXDOMAIN:
                break
            except dns.exception.DNSException as exc:
                log.warning(
                    "nameserver_lookup_failed", zone=zone, host=host, error=str(exc)
                )
                continue
            if found.rrset is not None:
                addresses.extend(rdata.address for rdata in found.rrset)
                break
    unique = list(dict.fromkeys(addresses))
    if not unique:
        raise DNSLookupError(
            zone, f"no name server of {zone} ({', '.join(hosts)}) has an address"
        )
    return [(address, settings.nameserver_port) for address in unique]


@dataclass
class _ServerWatch:
    """The state of polling one server."""

    server: Server
    queries: int = 0
    seen_after: float | None = None
    missing: set[str] = field(default_factory=set)
    last_problem: str | None = None


async def wait_for_txt(
    zone: str, fqdn: str, values: set[str], settings: PropagationSettings
) -> dict[str, Any]:
    """Wait until every server answers every value at fqdn; return per-server timing.

    In ``authoritative`` mode the servers are the zone's name servers, asked
    without recursion; in ``resolvers`` mode the configured resolvers.

    Raises:
        DNSPropagationError: some server still lacks a value at the timeout.
        DNSLookupError: the zone's name servers could not be found.
    """
    fqdn = normalize_name(fqdn)
    if settings.mode == "authoritative":
        servers = await authoritative_servers(zone, settings)
    else:
        servers = list(settings.resolvers)
    if not servers:
        raise DNSLookupError(fqdn, "mode 'resolvers' needs at least one resolver")

    started = time.monotonic()
    deadline = started + settings.timeout
    recursive = settings.mode == "resolvers"
    watches = [_ServerWatch(server, missing=set(values)) for server in servers]
    await asyncio.gather(
        *(_watch(w, fqdn, started, deadline, recursive, settings) for w in watches)
    )
    elapsed = time.monotonic() - started

    late = [w for w in watches if w.missing]
    if late:
        details = "; ".join(_describe_late(w, len(values)) for w in late)
        raise DNSPropagationError(
            f"TXT at {fqdn} not visible after {elapsed:.1f} s on {details}",
            fqdn=fqdn,
            servers=tuple(_label(w.server) for w in late),
        )
    log.info("txt_record_propagated", zone=zone, fqdn=fqdn, elapsed=round(elapsed, 3))
    return {
        "zone": normalize_name(zone),
        "fqdn": fqdn,
        "mode": settings.mode,
        "elapsed": elapsed,
        "servers": {
            _label(w.server): {"seen_after": w.seen_after, "queries": w.queries}
            for w in watches
        },
    }


async def _watch(
    watch: _ServerWatch,
    fqdn: str,
    started: float,
    deadline: float,
    recursive: bool,
    settings: PropagationSettings,
) -> None:
    interval = settings.initial_interval
    while True:
        found = await _query_txt(watch, fqdn, deadline, recursive, settings)
        if found is not None:
            watch.missing -= found
        if not watch.missing:
            watch.seen_after = time.monotonic() - started
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        await asyncio.sleep(min(interval, remaining))
        interval = min(interval * 2, settings.max_interval)


async def _query_txt(
    watch: _ServerWatch,
    fqdn: str,
    deadline: float,
    recursive: bool,
    settings: PropagationSettings,
) -> set[str] | None:
    """The TXT values one server gives now, or None when it did not answer."""
    host, port = watch.server
    query = dns.message.make_query(_absolute(fqdn), dns.rdatatype.TXT)
    if not recursive:
        query.flags &= ~dns.flags.RD
    timeout = max(0.05, min(settings.query_timeout, deadline - time.monotonic()))
    watch.queries += 1
    try:
        response, _ = await dns.asyncquery.udp_with_fallback(
            query, host, timeout=timeout, port=port
        )
    except (dns.exception.DNSException, OSError) as exc:
        watch.last_problem = str(exc) or type(exc).__name__
        return None
    rcode = response.rcode()
    if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        watch.last_problem = dns.rcode.to_text(rcode)
        return None
    qname = dns.name.from_text(_absolute(fqdn))
    values = {
        b"".join(rdata.strings).decode(errors="replace")
        for rrset in response.answer
        if rrset.rdtype == dns.rdatatype.TXT and rrset.name == qname
        for rdata in rrset
    }
    if rcode == dns.rcode.NXDOMAIN:
        watch.last_problem = "NXDOMAIN"
    else:
        watch.last_problem = None if values else "no TXT record"
    return values


def _label(server: Server) -> str:
    host, port = server
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _describe_late(watch: _ServerWatch, total: int) -> str:
    text = f"{_label(watch.server)} (missing {len(watch.missing)} of {total} values"
    if watch.last_problem:
        text += f", last answer: {watch.last_problem}"
    return text + ")"
