"""An HTTPS reverse proxy in front of pebble that plays a CA's bad days.

pebble rejects nonces only at random (``PEBBLE_WFE_NONCEREJECT`` is a
percentage) and never rate-limits. The proxy answers chosen requests itself
with RFC 8555 problem documents (``badNonce`` with a fresh ``Replay-Nonce``,
``rateLimited`` with ``Retry-After``) and forwards everything else. It passes
the ``Host`` header on, so pebble writes the proxy's address into every URL it
returns and checks signed URLs against it: nothing needs rewriting. Every
exchange is recorded, with the nonce of signed requests and the JSON reply.
"""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from tests.testbed import PebbleServer

BAD_NONCE = "urn:ietf:params:acme:error:badNonce"
RATE_LIMITED = "urn:ietf:params:acme:error:rateLimited"
FORWARDED_REQUEST_HEADERS = ("Content-Type", "Accept")
FORWARDED_REPLY_HEADERS = (
    "Content-Type",
    "Location",
    "Link",
    "Replay-Nonce",
    "Retry-After",
    "Cache-Control",
)


@dataclass(frozen=True)
class Exchange:
    """One request through the proxy and what went back."""

    method: str
    path: str
    status: int
    nonce: str | None
    reply: Any
    injected: bool
    location: str | None = None
    # the Replay-Nonce sent back with an injected problem
    handed_nonce: str | None = None


@dataclass
class Fault:
    """A problem document to answer instead of forwarding."""

    path_part: str
    status: int
    problem_type: str
    detail: str
    retry_after: str | None = None
    times: int = 1


@dataclass
class AcmeProxy:
    """Forwards to ``upstream`` (pebble's base URL) unless a fault is due."""

    upstream: str
    upstream_ssl: ssl.SSLContext
    # set once serving, e.g. https://127.0.0.1:PORT
    base_url: str = ""
    exchanges: list[Exchange] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    nonces_to_reject: int = 0
    # Answer challenge POSTs as a CA that validates at once: status "valid".
    # pebble still validates on its own time behind the answer.
    challenges_answer_valid: bool = False
    _session: aiohttp.ClientSession | None = None
    _new_nonce_path: str | None = None

    @property
    def directory_url(self) -> str:
        return self.base_url + "/dir"

    def reject_nonces(self, times: int) -> None:
        """Answer the next ``times`` signed POSTs with ``badNonce``."""
        self.nonces_to_reject = times

    def fail_next(
        self,
        path_part: str,
        *,
        status: int,
        problem_type: str,
        detail: str,
        retry_after: str | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests whose path contains ``path_part``."""
        self.faults.append(
            Fault(path_part, status, problem_type, detail, retry_after, times)
        )

    def signed_posts(self) -> list[Exchange]:
        """Every POST that carried a JWS, in order."""
        return [e for e in self.exchanges if e.nonce is not None]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        nonce = _jws_nonce(body) if request.method == "POST" else None
        fault = self._due_fault(request.path, nonce)
        if fault is not None:
            return await self._inject(request, nonce, fault)
        return await self._forward(request, body, nonce)

    def _due_fault(self, path: str, nonce: str | None) -> Fault | None:
        if nonce is not None and self.nonces_to_reject > 0:
            self.nonces_to_reject -= 1
            return Fault("", 400, BAD_NONCE, "JWS has an invalid anti-replay nonce")
        for fault in self.faults:
            if fault.times > 0 and fault.path_part in path:
                fault.times -= 1
                return fault
        return None

    async def _inject(
        self, request: web.Request, nonce: str | None, fault: Fault
    ) -> web.Response:
        problem = {
            "type": fault.problem_type,
            "detail": fault.detail,
            "status": fault.status,
        }
        fresh = await self._fresh_nonce(request.host)
        headers = {"Replay-Nonce": fresh}
        if fault.retry_after is not None:
            headers["Retry-After"] = fault.retry_after
        self.exchanges.append(
            Exchange(
                request.method,
                request.path,
                fault.status,
                nonce,
                problem,
                True,
                handed_nonce=fresh,
            )
        )
        return web.json_response(
            problem,
            status=fault.status,
            headers=headers,
            content_type="application/problem+json",
        )

    async def _forward(
        self, request: web.Request, body: bytes, nonce: str | None
    ) -> web.Response:
        headers = {
            name: request.headers[name]
            for name in FORWARDED_REQUEST_HEADERS
            if name in request.headers
        }
        headers["Host"] = request.host
        session = self._client()
        async with session.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as reply:
            data = await reply.read()
            out: CIMultiDict[str] = CIMultiDict()
            for name in FORWARDED_REPLY_HEADERS:
                for value in reply.headers.getall(name, ()):
                    out.add(name, value)
            status = reply.status
        parsed: Any = None
        if out.get("Content-Type", "").split(";")[0].endswith("json"):
            with contextlib.suppress(ValueError):
                parsed = json.loads(data)
        self.exchanges.append(
            Exchange(
                request.method,
                request.path,
                status,
                nonce,
                parsed,
                False,
                location=out.get("Location"),
            )
        )
        if (
            self.challenges_answer_valid
            and request.method == "POST"
            and isinstance(parsed, dict)
            and parsed.get("type") == "dns-01"
            and "token" in parsed
        ):
            data = json.dumps({**parsed, "status": "valid"}).encode()
        return web.Response(status=status, body=data, headers=out)

    async def resource_path(self, name: str) -> str:
        """The path of a directory resource (``newOrder``, ``newNonce``...)."""
        host = URL(self.base_url).raw_authority
        async with self._client().get(
            self.upstream + "/dir", headers={"Host": host}
        ) as reply:
            directory = await reply.json()
        return URL(directory[name]).path

    async def _fresh_nonce(self, host: str) -> str:
        """A nonce pebble will accept, as a CA sends with every error."""
        if self._new_nonce_path is None:
            self._new_nonce_path = await self.resource_path("newNonce")
        url = self.upstream + self._new_nonce_path
        async with self._client().head(url, headers={"Host": host}) as reply:
            return reply.headers["Replay-Nonce"]

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.upstream_ssl)
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def _jws_nonce(body: bytes) -> str | None:
    """The nonce in a flattened JWS's protected header, if the body is one."""
    try:
        protected = json.loads(body)["protected"]
        padded = protected + "=" * (-len(protected) % 4)
        header = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, KeyError, TypeError):
        return None
    nonce = header.get("nonce") if isinstance(header, dict) else None
    return str(nonce) if nonce is not None else None


@contextlib.asynccontextmanager
async def serve_acme_proxy(pebble: PebbleServer) -> AsyncIterator[AcmeProxy]:
    """Serve a proxy for ``pebble`` over HTTPS on a free port of 127.0.0.1.

    It presents pebble's own TLS certificate (issued for 127.0.0.1), so a
    client that trusts pebble trusts the proxy.
    """
    upstream = pebble.directory_url.removesuffix("/dir")
    proxy = AcmeProxy(upstream, pebble.ssl_context())
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_dir = pebble.rundir / "pebble-tls"
    tls.load_cert_chain(tls_dir / "cert.pem", tls_dir / "key.pem")
    runner = web.AppRunner(proxy.app(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
        await site.start()
        port = runner.addresses[0][1]
        proxy.base_url = f"https://127.0.0.1:{port}"
        yield proxy
    finally:
        await proxy.aclose()
        await runner.cleanup()
