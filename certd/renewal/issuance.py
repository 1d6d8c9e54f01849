"""One ACME order through DNS-01, from CSR to downloaded chain.

All TXT values of an order are published first, checked on every
authoritative server, and only then are the challenges answered, so a
wildcard and its apex (two values at one name) need no sequencing. Every value
is written to the store before it is published and removed from DNS whatever
the outcome, so a crash leaves a list of exactly what to clean up.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import weakref
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import delete, select

from certd.dns.base import DNSProvider
from certd.dns.settings import PropagationSettings
from certd.errors import AcmeError, CertdError, ConflictError, ValidationError
from certd.store.models import AcmeAccount, ChallengeRecord

if TYPE_CHECKING:
    import josepy

    from certd.acme.client import AcmeClient, Dns01, PollPolicy
    from certd.service import Daemon

log = structlog.get_logger(__name__)

Progress = Callable[[float, str], Awaitable[None]]
# Told the order URL at a step; awaited before the step goes on.
OrderStep = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class IssuedChain:
    """What an order produced."""

    fullchain_pem: str
    order_url: str
    account_id: int
    alternates: list[str]


@dataclass
class Publication:
    """One TXT value to publish for one authorization."""

    challenge: Dns01
    authenticator_id: int
    fqdn: str = ""
    zone: str = ""
    record_id: int | None = None
    published: bool = False


def propagation_settings(
    daemon: Daemon, follow_cnames: bool = True
) -> PropagationSettings:
    dns = daemon.config.dns
    return PropagationSettings(
        timeout=dns.propagation_timeout,
        initial_interval=dns.propagation_interval,
        max_interval=dns.propagation_max_interval,
        resolvers=dns.resolver_addresses(),
        nameserver_port=dns.nameserver_port,
        mode=dns.propagation,
        follow_cnames=follow_cnames,
    )


def load_order_modules() -> None:
    """Import the ACME client and the DNS checks that an order runs on.

    They load lazily, so that a daemon with nothing to order does without
    them; one with a DNS authenticator loads them at start, or when its first
    authenticator is stored, rather than in the middle of its first order.
    """
    for name in ("certd.acme.client", "certd.dns.resolve"):
        importlib.import_module(name)


def normalize_directory(url: str) -> str:
    return url.strip()


def load_account_key(pem: str) -> josepy.JWK:
    """The stored account key as a JWK of the right kind."""
    import josepy

    key = serialization.load_pem_private_key(pem.encode(), None)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return josepy.JWKEC(key=key)
    return josepy.JWKRSA(key=key)


class Issuer:
    """Owns ACME accounts and runs orders for the daemon."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._account_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # Orders run side by side, each with a provider instance of its own,
        # and a vendor without an "add one value" call (Route 53) reads,
        # merges and writes back the whole set: changes to one name take turns.
        self._name_locks: weakref.WeakValueDictionary[tuple[int, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    def name_lock(self, authenticator_id: int, fqdn: str) -> asyncio.Lock:
        """The lock held by every change to ``fqdn`` through one authenticator."""
        key = (authenticator_id, fqdn)
        lock = self._name_locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._name_locks[key] = lock
        return lock

    def poll_policy(self) -> PollPolicy:
        from certd.acme.client import PollPolicy

        acme = self.daemon.config.acme
        return PollPolicy(
            initial=acme.poll_initial, maximum=acme.poll_max, timeout=acme.order_timeout
        )

    async def client(
        self,
        directory: str,
        *,
        tos: bool = False,
        register: bool = True,
        contact_email: str | None = None,
    ) -> tuple[AcmeClient, int]:
        """A client for the account at ``directory``, registering one on first use.

        With ``register`` false (renewals, which nobody is there to agree to
        new terms for) a missing account is an error instead.

        Raises:
            ValidationError: no account exists yet and the terms were not agreed to.
            ConflictError: no valid account, and ``register`` is false.
        """
        directory = normalize_directory(directory)
        async with self._account_locks[directory]:
            opened = await self.open_account(directory)
            if opened is not None:
                return opened
            if not register:
                raise ConflictError(
                    f"no valid ACME account for {directory} (it was deactivated "
                    "or deleted): register one with acme.registration.create"
                )
            return await self._register(
                directory, tos=tos, contact_email=contact_email, eab=None
            )

    async def open_account(self, directory: str) -> tuple[AcmeClient, int] | None:
        """A client for the stored account at ``directory``, if there is one."""
        assert self.daemon.http is not None
        async with self.daemon.db.session() as session:
            account = await session.scalar(
                select(AcmeAccount).where(AcmeAccount.directory == directory)
            )
        if account is None or not account.account_url or account.status != "valid":
            return None
        from certd.acme.client import AcmeClient

        key = load_account_key(account.key_pem)
        client = await AcmeClient.open(
            directory,
            key,
            session=self.daemon.http,
            account_url=account.account_url,
            poll=self.poll_policy(),
        )
        return client, account.id

    async def register(
        self,
        directory: str,
        *,
        tos: bool,
        contact_email: str | None,
        eab: tuple[str, bytes] | None,
    ) -> tuple[AcmeClient, int]:
        """Create the account at ``directory`` now.

        Raises:
            ConflictError: an account for this directory is already stored.
            ValidationError: terms not agreed, or the CA requires an external
                account binding that was not given.
        """
        directory = normalize_directory(directory)
        async with self._account_locks[directory]:
            if await self.open_account(directory) is not None:
                raise ConflictError(f"an ACME account for {directory} already exists")
            return await self._register(
                directory, tos=tos, contact_email=contact_email, eab=eab
            )

    async def _register(
        self,
        directory: str,
        *,
        tos: bool,
        contact_email: str | None,
        eab: tuple[str, bytes] | None,
    ) -> tuple[AcmeClient, int]:
        assert self.daemon.http is not None
        if not tos:
            raise ValidationError.single(
                "data.tos",
                f"no account exists yet at {directory}; agree to the CA's terms "
                "of service with tos=true to create one",
            )
        import josepy

        from certd.acme.client import AcmeClient

        private = ec.generate_private_key(ec.SECP256R1())
        client = await AcmeClient.open(
            directory,
            josepy.JWKEC(key=private),
            session=self.daemon.http,
            poll=self.poll_policy(),
        )
        meta = client.directory.meta
        if getattr(meta, "external_account_required", False) and eab is None:
            raise ValidationError.single(
                "data.eab_kid",
                f"{directory} requires an external account binding: create the "
                "account with acme.registration.create and the CA's EAB key id "
                "and HMAC key",
            )
        account_url = await client.register(
            contact_email=contact_email, terms_of_service_agreed=True, eab=eab
        )
        terms = getattr(meta, "terms_of_service", None)
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        async with self.daemon.db.session() as session:
            stale = await session.scalar(
                select(AcmeAccount).where(AcmeAccount.directory == directory)
            )
            if stale is not None:
                # A deactivated account keeps its row (certificates refer to it)
                # but gives way to the new one.
                stale.directory = f"{directory}#deactivated-{stale.id}"
                await session.flush()
            row = AcmeAccount(
                directory=directory,
                account_url=account_url,
                key_pem=pem,
                contact_email=contact_email,
                tos_agreed=True,
                terms_of_service=str(terms) if terms else None,
                eab_kid=eab[0] if eab else None,
            )
            session.add(row)
            await session.flush()
            account_id = row.id
        log.info(
            "acme_account_registered", directory=directory, account_url=account_url
        )
        return client, account_id

    async def issue(
        self,
        *,
        csr_pem: str,
        directory: str,
        dns_mapping: dict[str, int],
        tos: bool = False,
        register: bool = True,
        progress: Progress,
        job_id: int | None = None,
        replaces: str | None = None,
        on_order: OrderStep | None = None,
        before_finalize: OrderStep | None = None,
        preferred_chain: str | None = None,
    ) -> IssuedChain:
        """Run one order to its end and return the chain.

        ``preferred_chain`` is the issuer common name of the chain to take
        when the CA offers alternates; the default chain when none matches.
        ``on_order`` is awaited once the CA created the order and
        ``before_finalize`` just before the CSR is sent, so that a caller can
        record the order and, after a crash, fetch what it produced instead
        of ordering again.

        Raises:
            AcmeError: the CA refused or an authorization failed; the message
                names the domain, the challenge and the CA's problem.
            DNSProviderError, DNSPropagationError: a TXT value could not be
                published or did not become visible in time.
        """
        await progress(5, f"contacting the ACME server at {directory}")
        client, account_id = await self.client(directory, tos=tos, register=register)
        await progress(10, "creating the order")
        order = await client.new_order(csr_pem.encode(), replaces=replaces)
        bound = structlog.contextvars.bind_contextvars(order_url=order.url)
        providers: dict[int, DNSProvider] = {}
        publications: list[Publication] = []
        try:
            if on_order is not None:
                await on_order(order.url)
            authzs = await asyncio.gather(
                *(client.authorization(url) for url in order.authorizations)
            )
            pending = [
                (url, authz)
                for url, authz in zip(order.authorizations, authzs, strict=True)
                if authz.status.name == "pending"
            ]
            for _, authz in pending:
                challenge = client.dns01(authz)
                publications.append(
                    Publication(
                        challenge,
                        self._authenticator_for(challenge.domain, dns_mapping),
                    )
                )
            if publications:
                await progress(20, f"publishing {len(publications)} TXT value(s)")
                await self._publish(publications, providers, order.url, job_id)
                await progress(40, "waiting until every authoritative server answers")
                await self._wait_visible(publications)
                await progress(60, "asking the CA to validate")
                answers = await asyncio.gather(
                    *(
                        client.answer_challenge(p.challenge.challenge)
                        for p in publications
                    )
                )
                # A challenge the CA answers valid has made its authorization
                # valid (RFC 8555 7.1.6): only the others are polled.
                await client.poll_authorizations(
                    [
                        url
                        for (url, _), answer in zip(pending, answers, strict=True)
                        if answer != "valid"
                    ]
                )
            await progress(80, "finalizing the order")
            if before_finalize is not None:
                await before_finalize(order.url)
            csr = x509.load_pem_x509_csr(csr_pem.encode())
            order = await client.finalize(
                order, csr.public_bytes(serialization.Encoding.DER)
            )
            if order.certificate_url is None:
                raise AcmeError(
                    f"the CA marked order {order.url} valid without a certificate URL"
                )
            await progress(90, "downloading the certificate")
            fullchain, alternates = await client.download(order.certificate_url)
            if preferred_chain:
                fullchain = await client.select_chain(
                    fullchain, alternates, preferred_chain
                )
            return IssuedChain(fullchain, order.url, account_id, alternates)
        finally:
            await asyncio.shield(self._cleanup(publications, providers))
            structlog.contextvars.reset_contextvars(**bound)

    @staticmethod
    def _authenticator_for(domain: str, dns_mapping: dict[str, int]) -> int:
        if domain in dns_mapping:
            return dns_mapping[domain]
        raise ValidationError.single(
            f"data.dns_mapping.{domain}",
            "the CA asks to validate this name but no authenticator is mapped to it",
        )

    async def _provider(
        self, providers: dict[int, DNSProvider], authenticator_id: int
    ) -> DNSProvider:
        if authenticator_id not in providers:
            service = self.daemon.services["acme.dns.authenticator"]
            providers[authenticator_id] = await service.open_provider(authenticator_id)  # type: ignore[attr-defined]
        return providers[authenticator_id]

    async def _publish(
        self,
        publications: list[Publication],
        providers: dict[int, DNSProvider],
        order_url: str,
        job_id: int | None,
    ) -> None:
        from certd.dns.resolve import follow_cname

        settings = propagation_settings(self.daemon)
        for pub in publications:
            provider = await self._provider(providers, pub.authenticator_id)
            name = pub.challenge.record_name.rstrip(".")
            if provider.context.follow_cnames:
                pub.fqdn = await follow_cname(name, settings)
            else:
                pub.fqdn = name
            pub.zone = await provider.find_zone(pub.fqdn)
            # Written (and committed) before the value exists, so that a crash
            # right after publishing still leaves a record of what to remove.
            async with self.daemon.db.session() as session:
                row = ChallengeRecord(
                    authenticator_id=pub.authenticator_id,
                    zone=pub.zone,
                    fqdn=pub.fqdn,
                    value=pub.challenge.value,
                    order_url=order_url,
                    job_id=job_id,
                )
                session.add(row)
                await session.flush()
                pub.record_id = row.id
        await asyncio.gather(
            *(self._add(providers[p.authenticator_id], p) for p in publications)
        )

    async def _add(self, provider: DNSProvider, pub: Publication) -> None:
        async with self.name_lock(pub.authenticator_id, pub.fqdn):
            await provider.add_txt(pub.zone, pub.fqdn, pub.challenge.value)
        pub.published = True
        log.info(
            "txt_record_published", fqdn=pub.fqdn, zone=pub.zone, provider=provider.name
        )

    async def _wait_visible(self, publications: list[Publication]) -> None:
        from certd.dns.resolve import wait_for_txt

        settings = propagation_settings(self.daemon)
        groups: defaultdict[tuple[str, str], set[str]] = defaultdict(set)
        for pub in publications:
            groups[(pub.zone, pub.fqdn)].add(pub.challenge.value)
        await asyncio.gather(
            *(
                wait_for_txt(zone, fqdn, values, settings)
                for (zone, fqdn), values in groups.items()
            )
        )

    async def _cleanup(
        self, publications: list[Publication], providers: dict[int, DNSProvider]
    ) -> None:
        # All at once: a vendor that waits for each change to reach its servers
        # (Route 53) would otherwise take that wait once per name of the order.
        await asyncio.gather(
            *(
                remove_record(
                    self.daemon,
                    providers.get(pub.authenticator_id),
                    pub.record_id,
                    pub.zone,
                    pub.fqdn,
                    pub.challenge.value,
                    lock=self.name_lock(pub.authenticator_id, pub.fqdn),
                )
                for pub in publications
                if pub.record_id is not None
            )
        )
        for provider in providers.values():
            with contextlib.suppress(Exception):
                await provider.aclose()


async def remove_record(
    daemon: Daemon,
    provider: DNSProvider | None,
    record_id: int,
    zone: str | None,
    fqdn: str,
    value: str,
    *,
    lock: asyncio.Lock | None = None,
) -> bool:
    """Remove one value certd wrote and forget it; a failure is logged and kept for later.

    ``lock`` is held around the provider call (see :meth:`Issuer.name_lock`).
    """
    try:
        if provider is not None and zone:
            async with lock or contextlib.nullcontext():
                await provider.remove_txt(zone, fqdn, value)
    except CertdError as exc:
        log.warning("txt_record_removal_failed", fqdn=fqdn, error=exc.message)
        return False
    except Exception:
        log.exception("txt_record_removal_failed", fqdn=fqdn)
        return False
    async with daemon.db.session() as session:
        await session.execute(
            delete(ChallengeRecord).where(ChallengeRecord.id == record_id)
        )
    log.info("txt_record_removed", fqdn=fqdn, zone=zone)
    return True


async def clean_leftover_records(daemon: Daemon) -> int:
    """Remove TXT values a previous process wrote and did not get to remove."""
    async with daemon.db.session() as session:
        rows = (await session.scalars(select(ChallengeRecord))).all()
    if not rows:
        return 0
    service: Any = daemon.services["acme.dns.authenticator"]
    removed = 0
    by_authenticator: defaultdict[int, list[ChallengeRecord]] = defaultdict(list)
    for row in rows:
        by_authenticator[row.authenticator_id].append(row)
    for authenticator_id, records in by_authenticator.items():
        try:
            provider = await service.open_provider(authenticator_id)
        except CertdError as exc:
            log.warning(
                "leftover_records_kept",
                authenticator_id=authenticator_id,
                error=exc.message,
            )
            continue
        try:
            zone_cache: dict[str, str] = {}
            for row in records:
                zone = row.zone
                if not zone:
                    zone = zone_cache.get(row.fqdn) or await provider.find_zone(
                        row.fqdn
                    )
                    zone_cache[row.fqdn] = zone
                if await remove_record(
                    daemon, provider, row.id, zone, row.fqdn, row.value
                ):
                    removed += 1
        finally:
            await provider.aclose()
    log.info("leftover_records_cleaned", removed=removed, found=len(rows))
    return removed
