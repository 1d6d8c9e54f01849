"""A local fake of DigitalOcean's v2 domains API, from its public reference.

Domains and their records, Bearer tokens (optionally read-only, as a token
without the write scopes), the error body ``{"id", "message"}``, the ``type``
and ``name`` (fully qualified) record filters, page/per_page pagination with
``links.pages.next``, TTL of at least 30 s, and 429 with the rate-limit headers.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, error_id: str, message: str) -> web.Response:
    return web.json_response({"id": error_id, "message": message}, status=status)


@dataclass
class FakeDigitalOcean:
    """State of the fake; serve :meth:`app` on 127.0.0.1 and set ``base_url``."""

    domains: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    tokens: dict[str, bool] = field(default_factory=dict)  # token -> may write
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    base_url: str = ""
    throttled: int = 0
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))

    def add_domain(self, name: str) -> None:
        self.domains[name] = []

    def add_record(self, domain: str, rtype: str, name: str, data: str) -> None:
        """A record created by someone else; ``name`` relative, ``@`` for the apex."""
        self.domains[domain].append(self._record(rtype, name, data, 1800))

    def txt(self, domain: str, name: str) -> list[str]:
        """Sorted data of the TXT records at relative ``name``."""
        return sorted(
            r["data"]
            for r in self.domains[domain]
            if r["type"] == "TXT" and r["name"] == name
        )

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/domains/{domain}", self._get_domain)
        app.router.add_get("/domains/{domain}/records", self._list_records)
        app.router.add_post("/domains/{domain}/records", self._create_record)
        app.router.add_delete(
            "/domains/{domain}/records/{record_id}", self._delete_record
        )
        return app

    def _record(self, rtype: str, name: str, data: str, ttl: int) -> dict[str, Any]:
        return {
            "id": next(self._ids),
            "type": rtype,
            "name": name,
            "data": data,
            "priority": None,
            "port": None,
            "ttl": ttl,
            "weight": None,
            "flags": None,
            "tag": None,
        }

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append((request.method, request.path, dict(request.query)))
        if self.throttled > 0:
            self.throttled -= 1
            response = _error(429, "too_many_requests", "API Rate limit exceeded.")
            response.headers.update(
                {
                    "ratelimit-limit": "5000",
                    "ratelimit-remaining": "0",
                    "Retry-After": "0",
                }
            )
            return response
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ")
        if not header.startswith("Bearer ") or token not in self.tokens:
            return _error(401, "Unauthorized", "Unable to authenticate you")
        if request.method != "GET" and not self.tokens[token]:
            return _error(
                403, "Forbidden", "You are not authorized to perform this operation"
            )
        if request.match_info.get("domain") not in self.domains:
            return _error(
                404, "not_found", "The resource you were accessing could not be found."
            )
        return await handler(request)

    async def _get_domain(self, request: web.Request) -> web.Response:
        name = request.match_info["domain"]
        return web.json_response(
            {"domain": {"name": name, "ttl": 1800, "zone_file": ""}}
        )

    async def _list_records(self, request: web.Request) -> web.Response:
        domain = request.match_info["domain"]
        rtype = request.query.get("type")
        fqdn = request.query.get("name")
        records = [
            r
            for r in self.domains[domain]
            if (rtype is None or r["type"] == rtype)
            and (fqdn is None or _fqdn(r["name"], domain) == fqdn)
        ]
        page = int(request.query.get("page", 1))
        per_page = min(int(request.query.get("per_page", 20)), 200)
        chunk = records[(page - 1) * per_page : page * per_page]
        pages: dict[str, str] = {}
        if page * per_page < len(records):
            pages["next"] = f"{self.base_url}{request.path}?page={page + 1}"
        return web.json_response(
            {
                "domain_records": chunk,
                "links": {"pages": pages},
                "meta": {"total": len(records)},
            }
        )

    async def _create_record(self, request: web.Request) -> web.Response:
        domain = request.match_info["domain"]
        data = await request.json()
        if data.get("type") not in {
            "A",
            "AAAA",
            "CAA",
            "CNAME",
            "MX",
            "NS",
            "TXT",
            "SRV",
        }:
            return _error(
                422, "unprocessable_entity", "Type is not a valid record type"
            )
        name = str(data.get("name") or "")
        # names are relative to the domain ("@" for the apex), never absolute
        if not name or name.endswith("."):
            return _error(422, "unprocessable_entity", "Name is invalid")
        ttl = data.get("ttl", 1800)
        if not isinstance(ttl, int) or ttl < 30:
            return _error(
                422, "unprocessable_entity", "Ttl must be greater than or equal to 30"
            )
        record = self._record(data["type"], name, data.get("data", ""), ttl)
        self.domains[domain].append(record)
        return web.json_response({"domain_record": record}, status=201)

    async def _delete_record(self, request: web.Request) -> web.Response:
        domain = request.match_info["domain"]
        record_id = int(request.match_info["record_id"])
        records = self.domains[domain]
        for record in records:
            if record["id"] == record_id:
                records.remove(record)
                return web.Response(status=204)
        return _error(
            404, "not_found", "The resource you were accessing could not be found."
        )


def _fqdn(name: str, domain: str) -> str:
    return domain if name == "@" else f"{name}.{domain}"
