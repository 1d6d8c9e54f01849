"""Signed ACME requests over aiohttp: JWS, the nonce pool and problem documents.

RFC 8555 §6 is implemented here and nowhere else: every POST carries a JWS
whose protected header names the URL and a fresh nonce, and either the account
key (``jwk``, before the account exists) or the account URL (``kid``). Error
replies are RFC 7807 problem documents and become :class:`AcmeError`.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import josepy
import structlog
from acme import jws, messages
from yarl import URL

from certd.errors import AcmeError
from certd.retry_after import parse_retry_after

log = structlog.get_logger(__name__)

JOSE_CONTENT_TYPE = "application/jose+json"
PROBLEM_CONTENT_TYPE = "application/problem+json"
PEM_CHAIN_CONTENT_TYPE = "application/pem-certificate-chain"
ERROR_PREFIX = "urn:ietf:params:acme:error:"
BAD_NONCE = ERROR_PREFIX + "badNonce"
RATE_LIMITED = ERROR_PREFIX + "rateLimited"
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30)

_EC_ALGORITHMS = {
    "secp256r1": josepy.ES256,
    "secp384r1": josepy.ES384,
    "secp521r1": josepy.ES512,
}


def signature_algorithm(key: josepy.JWK) -> josepy.JWASignature:
    """The JWS algorithm for an account key: ES256/384/512 by curve, RS256 for RSA."""
    if isinstance(key, josepy.JWKRSA):
        return josepy.RS256
    # josepy wraps the key in a proxy, so look at what it can do, not its type
    if isinstance(key, josepy.JWKEC) and hasattr(key.key, "sign"):
        alg = _EC_ALGORITHMS.get(key.key.curve.name)
        if alg is not None:
            return alg
    raise AcmeError(
        "the ACME account key must be an RSA key or an EC private key on "
        "P-256, P-384 or P-521"
    )


@dataclass(frozen=True)
class Reply:
    """One HTTP reply from the CA, fully read."""

    url: str
    status: int
    headers: Mapping[str, str]
    body: bytes
    links: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def location(self) -> str | None:
        """The Location header: URL of a created account or order."""
        return self.headers.get("Location")

    @property
    def retry_after(self) -> float | None:
        """Seconds the CA asked us to wait, if it said."""
        return parse_retry_after(self.headers.get("Retry-After"))

    def json(self) -> Any:
        """The body as JSON; a CA that sends something else is an error."""
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise AcmeError(
                f"the CA sent a body that is not JSON from {self.url} "
                f"(HTTP {self.status})",
                retryable=True,
            ) from exc

    def text(self) -> str:
        """The body as UTF-8 text (PEM chains)."""
        return self.body.decode("utf-8", errors="replace")


def problem_error(reply: Reply, action: str) -> AcmeError:
    """Map a CA error reply onto AcmeError, keeping type, detail and Retry-After."""
    problem: messages.Error | None = None
    try:
        problem = messages.Error.from_json(json.loads(reply.body))
    except (ValueError, josepy.DeserializationError):
        problem = None
    if problem is None:
        return AcmeError(
            f"{action} failed: the CA answered HTTP {reply.status} at {reply.url}",
            retry_after=reply.retry_after,
            retryable=reply.status >= 500 or reply.status == 429,
        )
    return AcmeError(
        f"{action} failed: {describe_problem(problem)}",
        problem_type=problem.typ,
        domain=problem.identifier.value if problem.identifier else None,
        retry_after=reply.retry_after,
        retryable=problem.typ == RATE_LIMITED or reply.status >= 500,
    )


def describe_problem(problem: messages.Error) -> str:
    """One line for a problem document: detail, type, and every subproblem."""
    text = problem.detail or problem.title or "no detail given"
    code = problem.code or problem.typ
    if problem.identifier is not None:
        text = f"{problem.identifier.value}: {text}"
    parts = [f"{text} ({code})"]
    for sub in problem.subproblems or ():
        parts.append(describe_problem(sub))
    return "; ".join(parts)


class Transport:
    """Sends signed requests to one CA and keeps the nonce pool (RFC 8555 §6.5)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        key: josepy.JWK,
        new_nonce_url: str,
        *,
        account_url: str | None = None,
        max_nonce_retries: int = 3,
    ) -> None:
        self.session = session
        self.key = key
        self.alg = signature_algorithm(key)
        self.account_url = account_url
        self.new_nonce_url = new_nonce_url
        self.max_nonce_retries = max_nonce_retries
        self._nonces: deque[str] = deque(maxlen=64)

    def set_key(self, key: josepy.JWK) -> None:
        """Sign with ``key`` from now on (after a key rollover)."""
        self.alg = signature_algorithm(key)
        self.key = key

    async def get(self, url: str) -> Reply:
        """An unsigned GET; only the directory is fetched this way."""
        reply = await self._send("GET", url, None, {})
        if reply.status >= 400:
            raise problem_error(reply, f"fetching {url}")
        return reply

    async def post(
        self,
        url: str,
        payload: Mapping[str, Any] | None,
        *,
        action: str,
        use_jwk: bool = False,
        key: josepy.JWK | None = None,
        accept: str | None = None,
    ) -> Reply:
        """POST a signed payload, or POST-as-GET when ``payload`` is None.

        ``use_jwk`` embeds the public key instead of the account URL, as newAccount
        and revocation by certificate key need; ``key`` signs with another key.
        A badNonce rejection is retried with the fresh nonce it carries.

        Raises:
            AcmeError: the CA answered with a problem document, or rejected
                ``max_nonce_retries + 1`` nonces in a row.
        """
        body = b"" if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": JOSE_CONTENT_TYPE}
        if accept is not None:
            headers["Accept"] = accept
        rejected = 0
        while True:
            nonce = await self._nonce()
            signed = self._sign(body, url, nonce, use_jwk=use_jwk, key=key)
            reply = await self._send("POST", url, signed, headers)
            if reply.status < 400:
                return reply
            error = problem_error(reply, action)
            if error.problem_type != BAD_NONCE:
                raise error
            rejected += 1
            log.debug("nonce_rejected", url=url, rejected=rejected)
            if rejected > self.max_nonce_retries:
                raise AcmeError(
                    f"{action} failed: the CA rejected {rejected} nonces in a row",
                    problem_type=BAD_NONCE,
                    retryable=True,
                )

    def _sign(
        self,
        body: bytes,
        url: str,
        nonce: str,
        *,
        use_jwk: bool,
        key: josepy.JWK | None,
    ) -> bytes:
        signer = key or self.key
        kid: str | None = None
        if not use_jwk and key is None:
            if self.account_url is None:
                raise AcmeError(
                    f"no ACME account is known to sign the request to {url}"
                )
            kid = self.account_url
        signature = jws.JWS.sign(
            body,
            key=signer,
            alg=signature_algorithm(signer),
            nonce=josepy.b64decode(nonce),
            url=url,
            kid=kid,
        )
        return signature.json_dumps().encode()

    async def _nonce(self) -> str:
        if self._nonces:
            return self._nonces.popleft()
        reply = await self._send("HEAD", self.new_nonce_url, None, {})
        if reply.status >= 400:
            raise problem_error(reply, "fetching a new nonce")
        # _send pooled the header; take it back out
        if not self._nonces:
            raise AcmeError(
                f"the CA sent no Replay-Nonce from {self.new_nonce_url}", retryable=True
            )
        return self._nonces.popleft()

    async def _send(
        self, method: str, url: str, data: bytes | None, headers: Mapping[str, str]
    ) -> Reply:
        try:
            async with self.session.request(
                method, url, data=data, headers=headers, timeout=REQUEST_TIMEOUT
            ) as response:
                body = await response.read()
                links: dict[str, list[str]] = {}
                for link in response.headers.getall("Link", ()):
                    for rel, target in _parse_links(link, str(response.url)):
                        links.setdefault(rel, []).append(target)
                reply = Reply(
                    url=url,
                    status=response.status,
                    headers=dict(response.headers),
                    body=body,
                    links={rel: tuple(urls) for rel, urls in links.items()},
                )
        except aiohttp.ClientConnectorCertificateError as exc:
            # Still retryable: a CA may fix its certificate; the hint is for
            # the usual case, a private CA whose root this host lacks.
            raise AcmeError(
                f"cannot reach the ACME server at {url}: its TLS certificate is "
                f"not trusted here ({exc.certificate_error}); for a CA with a "
                "private root, set [acme] ca_bundle to that root's certificate",
                retryable=True,
            ) from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise AcmeError(
                f"cannot reach the ACME server at {url}: {exc or type(exc).__name__}",
                retryable=True,
            ) from exc
        nonce = reply.headers.get("Replay-Nonce")
        if nonce:
            self._nonces.append(nonce)
        return reply


def _parse_links(header: str, base: str) -> list[tuple[str, str]]:
    """Split one Link header (RFC 8288) into (rel, absolute URL) pairs."""
    pairs: list[tuple[str, str]] = []
    for part in _split_outside_quotes(header, ","):
        part = part.strip()
        if not part.startswith("<") or ">" not in part:
            continue
        target, _, params = part[1:].partition(">")
        rels: list[str] = []
        for param in _split_outside_quotes(params, ";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "rel":
                rels.extend(value.strip().strip('"').split())
        absolute = str(URL(base).join(URL(target)))
        pairs.extend((rel, absolute) for rel in rels)
    return pairs


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts
