"""A local fake of the PowerDNS Authoritative HTTP API (zones and RRsets).

From the API reference: ``X-API-Key`` authentication (401 otherwise), zone
ids with a trailing dot, ``GET /zones?zone=``, ``GET /zones/{id}`` with the
``rrset_name``/``rrset_type`` filters, and ``PATCH /zones/{id}`` with
``changetype`` REPLACE or DELETE, rejecting (422) out-of-zone or non-canonical
names and TXT content that is not quoted, as the server does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PREFIX = "/api/v1/servers/{server_id}"


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@dataclass
class FakePowerDNS:
    """Zones keyed by canonical name; each maps (name, type) to an RRset."""

    api_key: str = "pdns-key"
    # set by whoever serves the app, e.g. http://127.0.0.1:PORT
    base_url: str = ""
    server_id: str = "localhost"
    zones: dict[str, dict[tuple[str, str], dict[str, Any]]] = field(
        default_factory=dict
    )
    patches: list[dict[str, Any]] = field(default_factory=list)

    def add_zone(self, name: str) -> None:
        zone = name.rstrip(".") + "."
        self.zones[zone] = {
            (zone, "SOA"): {
                "name": zone,
                "type": "SOA",
                "ttl": 3600,
                "records": [
                    {
                        "content": f"ns1.{zone} hostmaster.{zone} 1 10800 3600 604800 3600",
                        "disabled": False,
                    }
                ],
                "comments": [],
            }
        }

    def put_rrset(
        self, zone: str, name: str, ttl: int, records: list[dict[str, Any]]
    ) -> None:
        """An RRset written by someone else (TXT; contents in zone-file syntax)."""
        key = (name.rstrip(".") + ".", "TXT")
        self.zones[zone.rstrip(".") + "."][key] = {
            "name": key[0],
            "type": "TXT",
            "ttl": ttl,
            "records": records,
            "comments": [],
        }

    def rrset(self, zone: str, name: str) -> dict[str, Any] | None:
        return self.zones[zone.rstrip(".") + "."].get((name.rstrip(".") + ".", "TXT"))

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get(PREFIX + "/zones", self._list_zones)
        app.router.add_get(PREFIX + "/zones/{zone_id}", self._get_zone)
        app.router.add_patch(PREFIX + "/zones/{zone_id}", self._patch_zone)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.headers.get("X-API-Key") != self.api_key:
            return web.Response(status=401, text="Unauthorized")
        if request.match_info.get("server_id") != self.server_id:
            return _error(404, "Not Found")
        zone_id = request.match_info.get("zone_id")
        if zone_id is not None and zone_id not in self.zones:
            return _error(404, f"Could not find domain '{zone_id}'")
        return await handler(request)

    def _summary(self, zone: str) -> dict[str, Any]:
        return {
            "id": zone,
            "name": zone,
            "kind": "Native",
            "url": f"/api/v1/servers/{self.server_id}/zones/{zone}",
            "serial": 1,
            "dnssec": False,
        }

    async def _list_zones(self, request: web.Request) -> web.Response:
        wanted = request.query.get("zone")
        if wanted is not None:
            wanted = wanted.rstrip(".") + "."
        return web.json_response(
            [self._summary(z) for z in self.zones if wanted is None or z == wanted]
        )

    async def _get_zone(self, request: web.Request) -> web.Response:
        zone = request.match_info["zone_id"]
        name = request.query.get("rrset_name")
        rtype = request.query.get("rrset_type")
        rrsets = [
            r
            for (n, t), r in self.zones[zone].items()
            if (name is None or n == name) and (rtype is None or t == rtype)
        ]
        return web.json_response({**self._summary(zone), "rrsets": rrsets})

    async def _patch_zone(self, request: web.Request) -> web.Response:
        zone = request.match_info["zone_id"]
        body = await request.json()
        self.patches.append(body)
        for rrset in body.get("rrsets", []):
            name, rtype = rrset.get("name", ""), rrset.get("type", "")
            if not name.endswith("."):
                return _error(422, f"Not in expected format (parsed as '{name}')")
            if name != zone and not name.endswith("." + zone):
                return _error(422, f"RRset {name} IN {rtype}: Name is out of zone")
            changetype = str(rrset.get("changetype", "")).upper()
            if changetype == "DELETE":
                self.zones[zone].pop((name, rtype), None)
            elif changetype == "REPLACE":
                for record in rrset.get("records", []):
                    content = record.get("content", "")
                    if rtype == "TXT" and not content.startswith('"'):
                        return _error(
                            422,
                            "Parsing record content (try 'pdnsutil check-zone'): "
                            'Data field in DNS should start with quote (") at '
                            f"position 0 of '{content}'",
                        )
                if "ttl" not in rrset:
                    return _error(422, "Key 'ttl' not present or not an Integer")
                self.zones[zone][(name, rtype)] = {
                    "name": name,
                    "type": rtype,
                    "ttl": rrset["ttl"],
                    "records": rrset["records"],
                    "comments": [],
                }
            else:
                return _error(422, "Changetype not understood")
        return web.Response(status=204)
