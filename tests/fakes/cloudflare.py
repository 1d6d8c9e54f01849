"""A local fake of the Cloudflare v4 API: zones, DNS records, tokens, global keys.

Built from Cloudflare's API documentation and the error bodies it is known to
send: every reply is the v4 envelope ``{"success", "errors", "messages",
"result", "result_info"}``; bad or mixed credentials get 400/403 with the
codes Cloudflare uses; a token scoped to some zones gets 403 (code 10000) for
anything outside them. Every request is recorded with its headers so tests can
check what a client sent.
"""

from __future__ import annotations

import datetime
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ZONE_ID = re.compile(r"^[0-9a-f]{32}$")
TOKEN = re.compile(r"^Bearer ([A-Za-z0-9_-]+)$")


@dataclass
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDictProxy[str]
    body: Any = None
    # the HTTP status the fake answered with
    status: int | None = None


@dataclass
class FakeZone:
    id: str
    name: str
    records: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Principal:
    """Who a request authenticated as; ``zones`` None means every zone."""

    kind: str
    zones: frozenset[str] | None


PRINCIPAL_KEY = web.RequestKey("principal", Principal)


class CloudflareError(Exception):
    """An error reply: HTTP status and Cloudflare error entries."""

    def __init__(self, status: int, *errors: dict[str, Any]) -> None:
        super().__init__(status, errors)
        self.status = status
        self.errors = list(errors)


def _error(code: int, message: str, *chain: tuple[int, str]) -> dict[str, Any]:
    entry: dict[str, Any] = {"code": code, "message": message}
    if chain:
        entry["error_chain"] = [{"code": c, "message": m} for c, m in chain]
    return entry


def envelope(
    result: Any = None,
    *,
    errors: Iterable[dict[str, Any]] = (),
    result_info: dict[str, int] | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> web.Response:
    errors = list(errors)
    body: dict[str, Any] = {
        "success": not errors,
        "errors": errors,
        "messages": [],
        "result": result,
    }
    if result_info is not None:
        body["result_info"] = result_info
    return web.json_response(body, status=status, headers=headers)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class FakeCloudflare:
    """State and request handlers of the fake; serve :meth:`app` on 127.0.0.1."""

    def __init__(self) -> None:
        self.zones: dict[str, FakeZone] = {}
        # set by whoever serves the app, e.g. http://127.0.0.1:PORT
        self.base_url = ""
        self.requests: list[RecordedRequest] = []
        self._tokens: dict[str, frozenset[str] | None] = {}
        self._keys: set[tuple[str, str]] = set()
        self._failures: list[tuple[int, str | None]] = []

    # --- set-up and inspection ---------------------------------------------

    def add_zone(self, name: str) -> str:
        """Create a zone and return its id."""
        zone = FakeZone(uuid.uuid4().hex, name.lower())
        self.zones[zone.id] = zone
        return zone.id

    def add_token(self, token: str, zones: Iterable[str] | None = None) -> None:
        """Accept ``token``, limited to ``zones`` (names) unless None."""
        self._tokens[token] = None if zones is None else frozenset(zones)

    def add_global_key(self, email: str, key: str) -> None:
        """Accept the account email with its global API key (all zones)."""
        self._keys.add((email, key))

    def zone(self, name: str) -> FakeZone:
        return next(z for z in self.zones.values() if z.name == name)

    def records(self, zone: str) -> list[dict[str, Any]]:
        """Every record of the zone named ``zone``, oldest first."""
        return list(self.zone(zone).records.values())

    def zone_names(self) -> list[str]:
        """Names of every zone of the fake (a DNS server's view of it)."""
        return [zone.name for zone in list(self.zones.values())]

    def txt_values(self, fqdn: str) -> list[str]:
        """The TXT contents at ``fqdn`` in any zone, as a DNS server would serve them."""
        fqdn = fqdn.rstrip(".").lower()
        return [
            _unquote(record["content"])
            for zone in list(self.zones.values())
            for record in list(zone.records.values())
            if record["type"] == "TXT" and record["name"] == fqdn
        ]

    def add_record(
        self, zone: str, rtype: str, name: str, content: str, ttl: int = 1
    ) -> dict[str, Any]:
        """Put a record in place as if someone else had created it."""
        return self._store(self.zone(zone), rtype, name, content, ttl)

    def fail_next(
        self, status: int, *, times: int = 1, retry_after: str | None = None
    ) -> None:
        """Answer the next ``times`` requests with ``status`` before any checks."""
        self._failures.extend([(status, retry_after)] * times)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record, self._inject, self._errors])
        app.router.add_get("/user/tokens/verify", self._verify_token)
        app.router.add_get("/zones", self._list_zones)
        app.router.add_get("/zones/{zone_id}", self._get_zone)
        app.router.add_get("/zones/{zone_id}/dns_records", self._list_records)
        app.router.add_post("/zones/{zone_id}/dns_records", self._create_record)
        app.router.add_delete(
            "/zones/{zone_id}/dns_records/{record_id}", self._delete_record
        )
        return app

    # --- middlewares -------------------------------------------------------

    @web.middleware
    async def _record(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                body = await request.text()
        recorded = RecordedRequest(
            request.method,
            request.path,
            dict(request.query),
            CIMultiDictProxy(CIMultiDict(request.headers)),
            body,
        )
        self.requests.append(recorded)
        response = await handler(request)
        recorded.status = response.status
        return response

    @web.middleware
    async def _inject(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        if not self._failures:
            return await handler(request)
        status, retry_after = self._failures.pop(0)
        headers = {"Retry-After": retry_after} if retry_after is not None else None
        if status == 429:
            error = _error(
                971, "Please wait and consider throttling your request speed"
            )
        else:
            error = _error(10002, "An unknown error has occurred")
        return envelope(errors=[error], status=status, headers=headers)

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        try:
            request[PRINCIPAL_KEY] = self._authenticate(request)
            return await handler(request)
        except CloudflareError as exc:
            return envelope(errors=exc.errors, status=exc.status)

    def _authenticate(self, request: web.Request) -> Principal:
        authorization = request.headers.get("Authorization")
        email = request.headers.get("X-Auth-Email")
        key = request.headers.get("X-Auth-Key")
        if authorization is not None and (email is not None or key is not None):
            raise CloudflareError(
                400,
                _error(
                    6003,
                    "Invalid request headers",
                    (6103, "Invalid format for X-Auth-Key header"),
                ),
            )
        if authorization is not None:
            match = TOKEN.match(authorization)
            if match is None:
                raise CloudflareError(
                    400,
                    _error(
                        6003,
                        "Invalid request headers",
                        (6111, "Invalid format for Authorization header"),
                    ),
                )
            if match.group(1) not in self._tokens:
                raise CloudflareError(403, _error(9109, "Invalid access token"))
            return Principal("token", self._tokens[match.group(1)])
        if email is None and key is None:
            raise CloudflareError(
                400,
                _error(
                    9106, "Missing X-Auth-Key, X-Auth-Email or Authorization headers"
                ),
            )
        if not email or "@" not in email:
            raise CloudflareError(
                400,
                _error(
                    6003,
                    "Invalid request headers",
                    (6102, "Invalid format for X-Auth-Email header"),
                ),
            )
        if not key or not re.fullmatch(r"[A-Za-z0-9]+", key):
            raise CloudflareError(
                400,
                _error(
                    6003,
                    "Invalid request headers",
                    (6103, "Invalid format for X-Auth-Key header"),
                ),
            )
        if (email, key) not in self._keys:
            raise CloudflareError(
                403, _error(9103, "Unknown X-Auth-Key or X-Auth-Email")
            )
        return Principal("key", None)

    # --- handlers ----------------------------------------------------------

    async def _verify_token(self, request: web.Request) -> web.Response:
        if request[PRINCIPAL_KEY].kind != "token":
            raise CloudflareError(400, _error(1000, "Invalid API Token"))
        return envelope({"id": uuid.uuid4().hex, "status": "active"})

    async def _list_zones(self, request: web.Request) -> web.Response:
        principal: Principal = request[PRINCIPAL_KEY]
        name = request.query.get("name")
        if name is not None:
            name = name.lower()
            if principal.zones is not None and name not in principal.zones:
                raise CloudflareError(403, _error(10000, "Authentication error"))
        zones = [
            z
            for z in self.zones.values()
            if (name is None or z.name == name)
            and (principal.zones is None or z.name in principal.zones)
        ]
        page, per_page = _paging(request, default=20, maximum=50)
        return _page([_zone_json(z) for z in zones], page, per_page)

    async def _get_zone(self, request: web.Request) -> web.Response:
        return envelope(_zone_json(self._zone_for(request)))

    async def _list_records(self, request: web.Request) -> web.Response:
        zone = self._zone_for(request)
        query = request.query
        wanted = {
            "type": query.get("type"),
            "name": (query.get("name") or "").lower() or None,
            "content": query.get("content"),
        }
        records = [
            r
            for r in zone.records.values()
            if all(v is None or r[k] == v for k, v in wanted.items())
        ]
        page, per_page = _paging(request, default=100, maximum=5000)
        return _page(records, page, per_page)

    async def _create_record(self, request: web.Request) -> web.Response:
        zone = self._zone_for(request)
        data = await request.json()
        missing = [k for k in ("type", "name", "content") if not data.get(k)]
        if missing:
            raise CloudflareError(
                400, _error(9000 + len(missing), f"DNS record {missing[0]} is required")
            )
        ttl = data.get("ttl", 1)
        if not isinstance(ttl, int) or not (ttl == 1 or 60 <= ttl <= 86400):
            raise CloudflareError(
                400, _error(9021, "Invalid TTL. Must be between 60 and 86400 or 1")
            )
        name = _absolute(data["name"], zone.name)
        if name != zone.name and not name.endswith("." + zone.name):
            raise CloudflareError(
                400, _error(9005, f"Record name {name} is not in zone {zone.name}")
            )
        for record in zone.records.values():
            if (record["type"], record["name"], record["content"]) == (
                data["type"],
                name,
                data["content"],
            ):
                raise CloudflareError(
                    400, _error(81058, "An identical record already exists.")
                )
        return envelope(self._store(zone, data["type"], name, data["content"], ttl))

    async def _delete_record(self, request: web.Request) -> web.Response:
        zone = self._zone_for(request)
        record_id = request.match_info["record_id"]
        if zone.records.pop(record_id, None) is None:
            raise CloudflareError(404, _error(81044, "Record does not exist."))
        return envelope({"id": record_id})

    # --- helpers -----------------------------------------------------------

    def _zone_for(self, request: web.Request) -> FakeZone:
        zone_id = request.match_info["zone_id"]
        if not ZONE_ID.match(zone_id):
            raise CloudflareError(
                400,
                _error(
                    7003,
                    f"Could not route to {request.path}, perhaps your object "
                    "identifier is invalid?",
                ),
            )
        zone = self.zones.get(zone_id)
        principal: Principal = request[PRINCIPAL_KEY]
        if zone is not None and principal.zones is not None:
            if zone.name not in principal.zones:
                raise CloudflareError(403, _error(10000, "Authentication error"))
        if zone is None:
            raise CloudflareError(404, _error(1003, "Invalid or missing zone id."))
        return zone

    def _store(
        self, zone: FakeZone, rtype: str, name: str, content: str, ttl: int
    ) -> dict[str, Any]:
        now = _now()
        record_id = uuid.uuid4().hex
        record: dict[str, Any] = {
            "id": record_id,
            "zone_id": zone.id,
            "zone_name": zone.name,
            "name": _absolute(name, zone.name),
            "type": rtype,
            "content": content,
            "proxiable": False,
            "proxied": False,
            "ttl": ttl,
            "locked": False,
            "comment": None,
            "tags": [],
            "meta": {"auto_added": False, "source": "primary"},
            "created_on": now,
            "modified_on": now,
        }
        zone.records[record_id] = record
        return record


def _absolute(name: str, zone: str) -> str:
    name = name.rstrip(".").lower()
    if name == "@":
        return zone
    if name == zone or name.endswith("." + zone):
        return name
    return f"{name}.{zone}"


def _unquote(content: str) -> str:
    # Cloudflare accepts TXT content with or without surrounding quotes
    if len(content) >= 2 and content[0] == content[-1] == '"':
        return content[1:-1]
    return content


def _zone_json(zone: FakeZone) -> dict[str, Any]:
    return {
        "id": zone.id,
        "name": zone.name,
        "status": "active",
        "paused": False,
        "type": "full",
        "name_servers": ["ada.ns.cloudflare.com", "bob.ns.cloudflare.com"],
    }


def _paging(request: web.Request, *, default: int, maximum: int) -> tuple[int, int]:
    try:
        page = int(request.query.get("page", 1))
        per_page = int(request.query.get("per_page", default))
    except ValueError as exc:
        raise CloudflareError(400, _error(1004, "Invalid page or per_page")) from exc
    if page < 1 or not 5 <= per_page <= maximum:
        raise CloudflareError(
            400, _error(1004, f"per_page must be between 5 and {maximum}")
        )
    return page, per_page


def _page(items: list[dict[str, Any]], page: int, per_page: int) -> web.Response:
    total = len(items)
    chunk = items[(page - 1) * per_page : page * per_page]
    info = {
        "page": page,
        "per_page": per_page,
        "count": len(chunk),
        "total_count": total,
        "total_pages": max(1, -(-total // per_page)),
    }
    return envelope(chunk, result_info=info)


class CloudflareRecords:
    """A DNS server's view of the fake's zones (see ``tests.fakes.dns_server``)."""

    def __init__(self, fake: FakeCloudflare) -> None:
        self._fake = fake

    def zones(self) -> list[str]:
        return self._fake.zone_names()

    def txt(self, fqdn: str) -> list[str]:
        return self._fake.txt_values(fqdn)
