"""A local fake of the deSEC REST API (domains and RRsets), from its documentation.

``Authorization: Token <token>`` (401 ``{"detail": "Invalid token."}``
otherwise), ``GET /domains/?owns_qname=``, ``GET /domains/{name}/`` with
``minimum_ttl``, ``GET /domains/{name}/rrsets/{subname}/{type}/`` with ``@``
for the apex, and the atomic bulk ``PUT /domains/{name}/rrsets/`` where an
empty record list deletes; it refuses TTLs below ``minimum_ttl``, unquoted TXT
content and ``@`` as a subname in bodies (400 with one error object per
RRset), and can throttle with 429 and ``Retry-After``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class FakeDeSEC:
    """Domains keyed by name; each maps (subname, type) to an RRset."""

    token: str = "desec-token"
    base_url: str = ""
    minimum_ttl: int = 3600
    domains: dict[str, dict[tuple[str, str], dict[str, Any]]] = field(
        default_factory=dict
    )
    throttled: int = 0
    requests: list[tuple[str, str]] = field(default_factory=list)

    def add_domain(self, name: str) -> None:
        self.domains[name] = {}

    def put_rrset(
        self, domain: str, subname: str, ttl: int, records: list[str]
    ) -> None:
        self.domains[domain][(subname, "TXT")] = self._rrset(
            domain, subname, "TXT", ttl, records
        )

    def records(self, domain: str, subname: str) -> list[str] | None:
        rrset = self.domains[domain].get((subname, "TXT"))
        return None if rrset is None else sorted(rrset["records"])

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/domains/", self._list_domains)
        app.router.add_get("/domains/{name}/", self._get_domain)
        app.router.add_get("/domains/{name}/rrsets/{subname}/{type}/", self._get_rrset)
        app.router.add_put("/domains/{name}/rrsets/", self._bulk_put)
        return app

    def _rrset(
        self, domain: str, subname: str, rtype: str, ttl: int, records: list[str]
    ) -> dict[str, Any]:
        return {
            "created": "2026-01-01T00:00:00.000000Z",
            "domain": domain,
            "subname": subname,
            "name": f"{subname}.{domain}." if subname else f"{domain}.",
            "type": rtype,
            "records": records,
            "ttl": ttl,
            "touched": "2026-01-01T00:00:00.000000Z",
        }

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        if self.throttled > 0:
            self.throttled -= 1
            return web.json_response(
                {"detail": "Request was throttled. Expected available in 1 second."},
                status=429,
                headers={"Retry-After": "0"},
            )
        if request.headers.get("Authorization") != f"Token {self.token}":
            return web.json_response({"detail": "Invalid token."}, status=401)
        name = request.match_info.get("name")
        if name is not None and name not in self.domains:
            return web.json_response({"detail": "Not found."}, status=404)
        return await handler(request)

    def _domain_json(self, name: str) -> dict[str, Any]:
        return {
            "created": "2026-01-01T00:00:00.000000Z",
            "minimum_ttl": self.minimum_ttl,
            "name": name,
            "published": "2026-01-01T00:00:00.000000Z",
            "touched": "2026-01-01T00:00:00.000000Z",
        }

    async def _list_domains(self, request: web.Request) -> web.Response:
        qname = request.query.get("owns_qname")
        names = list(self.domains)
        if qname is not None:
            qname = qname.rstrip(".").lower()
            owners = [d for d in names if qname == d or qname.endswith("." + d)]
            names = [max(owners, key=len)] if owners else []
        return web.json_response([self._domain_json(n) for n in names])

    async def _get_domain(self, request: web.Request) -> web.Response:
        return web.json_response(self._domain_json(request.match_info["name"]))

    async def _get_rrset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        subname = request.match_info["subname"]
        subname = "" if subname == "@" else subname
        rrset = self.domains[name].get((subname, request.match_info["type"]))
        if rrset is None:
            return web.json_response({"detail": "Not found."}, status=404)
        return web.json_response(rrset)

    async def _bulk_put(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await request.json()
        if not isinstance(body, list):
            return web.json_response(
                {"non_field_errors": ["Expected a list."]}, status=400
            )
        errors = [self._validate(item) for item in body]
        if any(errors):
            return web.json_response(errors, status=400)
        written = []
        for item in body:
            key = (item["subname"], item["type"])
            if item["records"]:
                rrset = self._rrset(name, *key, item["ttl"], item["records"])
                self.domains[name][key] = rrset
                written.append(rrset)
            else:
                self.domains[name].pop(key, None)
        return web.json_response(written)

    def _validate(self, item: dict[str, Any]) -> dict[str, list[str]]:
        errors: dict[str, list[str]] = {}
        for key in ("subname", "type", "ttl", "records"):
            if key not in item:
                errors[key] = ["This field is required."]
        if errors:
            return errors
        if item["subname"] == "@" or item["subname"].endswith("."):
            errors["subname"] = [
                "Subname can only use (lowercase) a-z, 0-9, ., -, and _."
            ]
        if item["records"] and item["ttl"] < self.minimum_ttl:
            errors["ttl"] = [
                f"Ensure this value is greater than or equal to {self.minimum_ttl}."
            ]
        if item["type"] == "TXT" and any(
            not r.startswith('"') for r in item["records"]
        ):
            errors["records"] = ['Data field in DNS should start with quote (").']
        return errors
