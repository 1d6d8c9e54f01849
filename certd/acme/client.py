"""An asyncio ACME (RFC 8555) client that owns its transport and its polling.

Message types come from the ``acme`` package and JWS from ``josepy``; HTTP,
nonces and the wait between polls are ours, so an order against a fast CA
finishes in milliseconds instead of whole seconds of fixed sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import aiohttp
import josepy
import structlog
from acme import challenges, crypto_util, jws, messages
from cryptography import x509
from cryptography.x509.oid import NameOID

from certd.acme.transport import (
    PEM_CHAIN_CONTENT_TYPE,
    Reply,
    Transport,
    describe_problem,
    signature_algorithm,
)
from certd.errors import AcmeError

log = structlog.get_logger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class PollPolicy:
    """How often to re-ask the CA: a growing interval, capped, within a deadline."""

    initial: float = 0.005
    factor: float = 1.5
    maximum: float = 2.0
    timeout: float = 300.0

    def first_interval(self, polling: int) -> float:
        """The wait before the first look while ``polling`` polls are under way.

        Every poll in the process asks a CA too, and an order's validation
        waits behind the others' work: with 50 orders in flight, 50 polls
        every few milliseconds would only slow them all. The first wait grows
        with the polls under way, so one order alone is looked at soon.
        """
        return min(self.initial * max(1, polling), self.maximum)

    def next_interval(self, interval: float) -> float:
        """The interval after ``interval``: grown by ``factor``, capped at ``maximum``."""
        return min(interval * self.factor, self.maximum)

    @staticmethod
    def wait(interval: float, retry_after: float | None, remaining: float) -> float:
        """Seconds to sleep before the next poll.

        The CA's Retry-After wins over our interval even above ``maximum``, but
        no wait reaches past the deadline: the last look happens at the deadline.
        """
        chosen = interval if retry_after is None else retry_after
        return max(0.0, min(chosen, remaining))


@dataclass(frozen=True)
class Order:
    """An order (RFC 8555 §7.1.3) and the URL it lives at."""

    url: str
    body: messages.Order

    @property
    def status(self) -> str:
        """``pending``, ``ready``, ``processing``, ``valid`` or ``invalid``."""
        return str(self.body.status.name)

    @property
    def identifiers(self) -> tuple[str, ...]:
        """The identifier values the order covers, as the CA lists them."""
        return tuple(i.value for i in self.body.identifiers or ())

    @property
    def authorizations(self) -> tuple[str, ...]:
        """URLs of the order's authorizations."""
        return tuple(self.body.authorizations or ())

    @property
    def finalize_url(self) -> str:
        """Where the CSR goes once every authorization is valid."""
        return str(self.body.finalize)

    @property
    def certificate_url(self) -> str | None:
        """Where the issued chain can be downloaded, once the order is valid."""
        return self.body.certificate


@dataclass(frozen=True)
class Dns01:
    """What to publish for one authorization's dns-01 challenge (RFC 8555 §8.4)."""

    domain: str
    record_name: str
    value: str
    challenge: messages.ChallengeBody


def authz_domain(authz: messages.Authorization) -> str:
    """The name an authorization is for, with ``*.`` restored for wildcards."""
    value = str(authz.identifier.value)
    return f"*.{value}" if authz.wildcard else value


class AcmeClient:
    """One account at one ACME directory; all calls are coroutines."""

    # Polls under way in this process, over every client (see first_interval).
    polling: ClassVar[int] = 0

    def __init__(
        self,
        directory_url: str,
        directory: messages.Directory,
        transport: Transport,
        poll: PollPolicy,
    ) -> None:
        self.directory_url = directory_url
        self.directory = directory
        self.poll = poll
        self._transport = transport
        self._log = log.bind(directory=directory_url)

    @classmethod
    async def open(
        cls,
        directory_url: str,
        account_key: josepy.JWK,
        *,
        session: aiohttp.ClientSession,
        account_url: str | None = None,
        poll: PollPolicy = PollPolicy(),
        max_nonce_retries: int = 3,
    ) -> AcmeClient:
        """Fetch the directory and return a client for ``account_key``.

        The session decides TLS trust; pass one whose SSL context trusts the CA.

        Raises:
            AcmeError: the directory cannot be fetched or lacks a required URL.
        """
        probe = Transport(session, account_key, new_nonce_url="")
        reply = await probe.get(directory_url)
        try:
            directory = messages.Directory.from_json(reply.json())
        except (josepy.DeserializationError, TypeError, AttributeError) as exc:
            raise AcmeError(f"{directory_url} is not an ACME directory") from exc
        for name in ("newNonce", "newAccount", "newOrder"):
            if not isinstance(getattr(directory, name, None), str):
                raise AcmeError(f"the ACME directory {directory_url} has no {name} URL")
        transport = Transport(
            session,
            account_key,
            directory.newNonce,
            account_url=account_url,
            max_nonce_retries=max_nonce_retries,
        )
        return cls(directory_url, directory, transport, poll)

    @property
    def account_url(self) -> str | None:
        """The account URL (JWS ``kid``), once registered or given."""
        return self._transport.account_url

    @property
    def account_key(self) -> josepy.JWK:
        """The key that signs this client's requests."""
        return self._transport.key

    # --- accounts (RFC 8555 §7.3) -------------------------------------------

    async def register(
        self,
        *,
        contact_email: str | None,
        terms_of_service_agreed: bool,
        eab: tuple[str, bytes] | None = None,
    ) -> str:
        """Create the account, or find it if the key already has one; return its URL.

        ``eab`` is an external account binding: the CA's key id and HMAC key.

        Raises:
            AcmeError: the CA refused the account (e.g. terms not agreed, EAB).
        """
        payload: dict[str, Any] = {"termsOfServiceAgreed": terms_of_service_agreed}
        if contact_email:
            payload["contact"] = [f"mailto:{contact_email}"]
        if eab is not None:
            payload["externalAccountBinding"] = self._eab(*eab)
        reply = await self._transport.post(
            self.directory.newAccount,
            payload,
            action="account registration",
            use_jwk=True,
        )
        url = self._account_location(reply)
        event = "account_registered" if reply.status == 201 else "account_found"
        self._log.info(event, account_url=url)
        return url

    async def find_account(self) -> str:
        """Return the URL of the existing account of this key without creating one.

        Raises:
            AcmeError: ``accountDoesNotExist`` when the key has no account.
        """
        reply = await self._transport.post(
            self.directory.newAccount,
            {"onlyReturnExisting": True},
            action="account lookup",
            use_jwk=True,
        )
        url = self._account_location(reply)
        self._log.info("account_found", account_url=url)
        return url

    async def update_contact(self, contact_email: str | None) -> tuple[str, ...]:
        """Replace the account's contacts with ``contact_email`` (or none).

        Returns the contacts the CA now holds.
        """
        contact = [f"mailto:{contact_email}"] if contact_email else []
        reply = await self._transport.post(
            self._require_account(), {"contact": contact}, action="contact update"
        )
        account = _parse(messages.Registration, reply, "account")
        self._log.info("account_contact_updated", account_url=self.account_url)
        return tuple(account.contact)

    async def deactivate_account(self) -> None:
        """Deactivate the account for good (RFC 8555 §7.3.6)."""
        await self._transport.post(
            self._require_account(),
            {"status": "deactivated"},
            action="account deactivation",
        )
        self._log.info("account_deactivated", account_url=self.account_url)

    async def key_rollover(self, new_key: josepy.JWK) -> None:
        """Move the account to ``new_key``; later requests are signed with it."""
        url = self._require_directory_url("keyChange")
        account_url = self._require_account()
        inner_payload = {
            "account": account_url,
            "oldKey": self.account_key.public_key().to_partial_json(),
        }
        # the inner JWS has no nonce and names the new key by jwk (RFC 8555 §7.3.5)
        inner = jws.JWS.sign(
            json.dumps(inner_payload).encode(),
            key=new_key,
            alg=signature_algorithm(new_key),
            nonce=None,
            url=url,
        )
        await self._transport.post(url, inner.to_partial_json(), action="key rollover")
        self._transport.set_key(new_key)
        self._log.info("account_key_rolled_over", account_url=account_url)

    # --- orders and authorizations (RFC 8555 §7.4, §7.5) --------------------

    async def new_order(self, csr_pem: bytes, *, replaces: str | None = None) -> Order:
        """Order a certificate for the CSR's CN and SAN names.

        ``replaces`` is the ARI certificate id of the certificate being renewed.

        Raises:
            AcmeError: the CSR names nothing, or the CA refused the order.
        """
        identifiers = _csr_identifiers(csr_pem)
        payload: dict[str, Any] = {"identifiers": identifiers}
        if replaces is not None:
            payload["replaces"] = replaces
        reply = await self._transport.post(
            self.directory.newOrder, payload, action="new order"
        )
        if reply.location is None:
            raise AcmeError("the CA created an order but sent no Location for it")
        order = Order(reply.location, _parse(messages.Order, reply, "order"))
        self._log.info(
            "order_created", order_url=order.url, identifiers=list(order.identifiers)
        )
        return order

    async def order(self, url: str) -> Order:
        """Fetch an order again, e.g. to resume it after a restart."""
        reply = await self._transport.post(url, None, action=f"fetching order {url}")
        return Order(url, _parse(messages.Order, reply, "order"))

    async def authorization(self, url: str) -> messages.Authorization:
        """Fetch one authorization."""
        reply = await self._transport.post(
            url, None, action=f"fetching authorization {url}"
        )
        return _parse(messages.Authorization, reply, "authorization")

    def dns01(self, authz: messages.Authorization) -> Dns01:
        """The TXT record name and value that answer the authorization's dns-01.

        Raises:
            AcmeError: the CA offers no dns-01 challenge for this authorization.
        """
        domain = authz_domain(authz)
        for challenge in authz.challenges or ():
            if isinstance(challenge.chall, challenges.DNS01):
                return Dns01(
                    domain=domain,
                    record_name=challenge.chall.validation_domain_name(
                        authz.identifier.value
                    ),
                    value=challenge.chall.validation(self.account_key),
                    challenge=challenge,
                )
        offered = ", ".join(c.chall.typ for c in authz.challenges or ()) or "none"
        raise AcmeError(
            f"the CA offers no dns-01 challenge for {domain} (offered: {offered})",
            domain=domain,
        )

    async def answer_challenge(self, challenge: messages.ChallengeBody) -> str | None:
        """Tell the CA the challenge is ready to be validated (RFC 8555 §7.5.1).

        Returns the challenge's status in the CA's answer (None when it sent
        none): a CA that validates at once may already say ``valid``.
        """
        reply = await self._transport.post(
            challenge.uri, {}, action=f"answering challenge {challenge.uri}"
        )
        status: str | None = None
        with contextlib.suppress(AcmeError):
            body = reply.json()
            if isinstance(body, dict) and isinstance(body.get("status"), str):
                status = body["status"]
        self._log.info("challenge_answered", challenge_url=challenge.uri, status=status)
        return status

    async def poll_authorizations(
        self, urls: Iterable[str]
    ) -> list[messages.Authorization]:
        """Wait until every authorization is valid; return them in ``urls`` order.

        The authorizations are polled concurrently; one that turns invalid is not
        polled again and stops the others, since the order cannot succeed.

        Raises:
            AcmeError: an authorization is not valid (names the domain, the
                challenge and the CA's problem), or the deadline passed.
        """
        urls = list(urls)
        if not urls:
            return []
        deadline = self._deadline()
        tasks = [
            asyncio.create_task(self._poll_authorization(url, deadline)) for url in urls
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            if task in done and (error := task.exception()) is not None:
                raise error
        return [task.result() for task in tasks]

    async def _poll_authorization(
        self, url: str, deadline: float
    ) -> messages.Authorization:
        authz = await self._poll_until(
            url,
            deadline,
            parse=lambda reply: _parse(messages.Authorization, reply, "authorization"),
            settled=lambda a: a.status != messages.STATUS_PENDING,
            pending=lambda a: f"authorization for {authz_domain(a)}",
        )
        domain = authz_domain(authz)
        if authz.status != messages.STATUS_VALID:
            self._log.warning(
                "authorization_invalid", domain=domain, status=authz.status.name
            )
            raise _authorization_error(authz)
        self._log.info("authorization_valid", domain=domain, authz_url=url)
        return authz

    # --- finalization and download (RFC 8555 §7.4) --------------------------

    async def finalize(self, order: Order, csr_der: bytes) -> Order:
        """Send the CSR and wait until the order is valid; return it.

        Raises:
            AcmeError: the CA refused the CSR, the order became invalid, or the
                deadline passed.
        """
        deadline = self._deadline()
        payload = {"csr": josepy.encode_b64jose(csr_der)}
        try:
            reply = await self._transport.post(
                order.finalize_url, payload, action=f"finalizing order {order.url}"
            )
        except AcmeError as exc:
            if exc.problem_type != "urn:ietf:params:acme:error:orderNotReady":
                raise
            # the CA may settle the order's status only after it is fetched again
            await self._poll_order(order.url, deadline, {"pending"})
            reply = await self._transport.post(
                order.finalize_url, payload, action=f"finalizing order {order.url}"
            )
        current = Order(order.url, _parse(messages.Order, reply, "order"))
        if current.status in ("ready", "processing"):
            current = await self._poll_order(
                order.url, deadline, {"ready", "processing"}
            )
        if current.status != "valid":
            raise _order_error(current)
        self._log.info("order_finalized", order_url=order.url)
        return current

    async def _poll_order(self, url: str, deadline: float, waiting: set[str]) -> Order:
        return await self._poll_until(
            url,
            deadline,
            parse=lambda reply: Order(url, _parse(messages.Order, reply, "order")),
            settled=lambda o: o.status not in waiting,
            pending=lambda o: f"order {url} (status {o.status})",
        )

    async def download(self, certificate_url: str) -> tuple[str, list[str]]:
        """Download a chain; return its PEM and the URLs of alternate chains."""
        reply = await self._transport.post(
            certificate_url,
            None,
            action=f"downloading certificate {certificate_url}",
            accept=PEM_CHAIN_CONTENT_TYPE,
        )
        pem = reply.text()
        if "-----BEGIN CERTIFICATE-----" not in pem:
            raise AcmeError(f"the CA sent no PEM certificate from {certificate_url}")
        alternates = list(reply.links.get("alternate", ()))
        self._log.info(
            "certificate_downloaded",
            certificate_url=certificate_url,
            alternates=len(alternates),
        )
        return pem, alternates

    async def select_chain(
        self, default_pem: str, alternates: Iterable[str], issuer_cn: str
    ) -> str:
        """The first chain whose topmost certificate ``issuer_cn`` issued.

        The default chain is looked at first, then each alternate in the order
        the CA linked them (RFC 8555 §7.4.2); when none matches, the default.
        """
        if top_issuer_cn(default_pem) == issuer_cn:
            return default_pem
        for url in alternates:
            pem, _ = await self.download(url)
            if top_issuer_cn(pem) == issuer_cn:
                self._log.info(
                    "alternate_chain_selected", certificate_url=url, issuer=issuer_cn
                )
                return pem
        self._log.info("preferred_chain_not_offered", issuer=issuer_cn)
        return default_pem

    async def revoke(
        self, cert_der: bytes, reason: int, *, cert_key: josepy.JWK | None = None
    ) -> None:
        """Revoke a certificate (RFC 8555 §7.6) with a RFC 5280 reason code.

        Signed by the account, or by ``cert_key`` (the certificate's own key).
        """
        url = self._require_directory_url("revokeCert")
        payload = {"certificate": josepy.encode_b64jose(cert_der), "reason": reason}
        await self._transport.post(
            url,
            payload,
            action="revocation",
            key=cert_key,
            use_jwk=cert_key is not None,
        )
        serial = x509.load_der_x509_certificate(cert_der).serial_number
        self._log.info("certificate_revoked", serial=f"{serial:x}", reason=reason)

    # --- internals ----------------------------------------------------------

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self.poll.timeout

    async def _poll_until(
        self,
        url: str,
        deadline: float,
        *,
        parse: Callable[[Reply], T],
        settled: Callable[[T], bool],
        pending: Callable[[T], str],
    ) -> T:
        loop = asyncio.get_running_loop()
        AcmeClient.polling += 1
        try:
            interval = self.poll.first_interval(AcmeClient.polling)
            retry_after: float | None = None
            last: T | None = None
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0 and last is not None:
                    raise AcmeError(
                        f"{pending(last)} is still pending after "
                        f"{self.poll.timeout:g} s",
                        retryable=True,
                    )
                await asyncio.sleep(self.poll.wait(interval, retry_after, remaining))
                reply = await self._transport.post(url, None, action=f"polling {url}")
                last = parse(reply)
                if settled(last):
                    return last
                interval = self.poll.next_interval(interval)
                retry_after = reply.retry_after
        finally:
            AcmeClient.polling -= 1

    def _require_account(self) -> str:
        if self.account_url is None:
            raise AcmeError("no ACME account is registered for this client")
        return self.account_url

    def _require_directory_url(self, name: str) -> str:
        url = getattr(self.directory, name, None)
        if not isinstance(url, str):
            raise AcmeError(
                f"the ACME directory {self.directory_url} has no {name} URL"
            )
        return url

    def _account_location(self, reply: Reply) -> str:
        if reply.location is None:
            raise AcmeError("the CA answered the account request without a Location")
        self._transport.account_url = reply.location
        return reply.location

    def _eab(self, kid: str, hmac_key: bytes) -> dict[str, Any]:
        # RFC 8555 §7.3.4: the account's public JWK, MACed with the CA's key
        public = json.dumps(self.account_key.public_key().to_partial_json()).encode()
        binding = jws.JWS.sign(
            public,
            key=josepy.JWKOct(key=hmac_key),
            alg=josepy.HS256,
            nonce=None,
            url=self.directory.newAccount,
            kid=kid,
        )
        return dict(binding.to_partial_json())


def top_issuer_cn(chain_pem: str) -> str | None:
    """The issuer common name of the last certificate of a PEM chain, if it has one."""
    try:
        chain = x509.load_pem_x509_certificates(chain_pem.encode())
    except ValueError:
        return None
    names = chain[-1].issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def _csr_identifiers(csr_pem: bytes) -> list[dict[str, str]]:
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise AcmeError("the CSR for the order is not valid PEM") from exc
    dns_names, ip_addresses = crypto_util.get_identifiers_from_x509(
        csr.subject, csr.extensions
    )
    identifiers = [{"type": "dns", "value": name} for name in dns_names]
    identifiers += [{"type": "ip", "value": ip} for ip in ip_addresses]
    if not identifiers:
        raise AcmeError("the CSR names no domain (no CN and no DNS or IP SAN)")
    return identifiers


ResourceT = TypeVar("ResourceT", bound=josepy.JSONDeSerializable)


def _parse(cls: type[ResourceT], reply: Reply, what: str) -> ResourceT:
    try:
        return cls.from_json(reply.json())  # type: ignore[return-value]
    except (josepy.DeserializationError, TypeError, KeyError) as exc:
        raise AcmeError(
            f"the CA sent a malformed {what} from {reply.url}: {exc}", retryable=True
        ) from exc


def _authorization_error(authz: messages.Authorization) -> AcmeError:
    domain = authz_domain(authz)
    failed = [(c, c.error) for c in authz.challenges or () if c.error is not None]
    if not failed:
        return AcmeError(
            f"authorization for {domain} is {authz.status.name} without a "
            "challenge error from the CA",
            domain=domain,
        )
    challenge, problem = failed[0]
    return AcmeError(
        f"authorization for {domain} is {authz.status.name}: the "
        f"{challenge.chall.typ} challenge failed: {describe_problem(problem)}",
        domain=domain,
        problem_type=problem.typ,
    )


def _order_error(order: Order) -> AcmeError:
    if order.body.error is not None:
        detail = describe_problem(order.body.error)
        problem_type = order.body.error.typ
    else:
        detail, problem_type = "the CA gave no reason", None
    return AcmeError(
        f"order {order.url} for {', '.join(order.identifiers)} is {order.status}: "
        f"{detail}",
        problem_type=problem_type,
    )


__all__ = [
    "AcmeClient",
    "Dns01",
    "Order",
    "PollPolicy",
    "authz_domain",
    "top_issuer_cn",
]
