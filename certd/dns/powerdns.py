"""PowerDNS Authoritative Server through its built-in HTTP API."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from pydantic import Field, SecretStr, field_validator

from certd.dns.base import (
    DNSProvider,
    ProviderAttributes,
    ProviderContext,
    candidate_zones,
    normalize_name,
)
from certd.dns.http import HttpReply, JsonHttpClient, check_api_url
from certd.dns.txt import parse_txt, quote_txt
from certd.errors import DNSProviderError

TTL = 60


class PowerDNSAttributes(ProviderAttributes):
    """The API address and key configured in pdns.conf (api=yes, api-key=...)."""

    api_url: str = Field(
        description="Webserver URL of the server, e.g. http://ns1.example.org:8081"
    )
    api_key: SecretStr = Field(description="The api-key from pdns.conf")
    server_id: str = Field("localhost", pattern=r"^[A-Za-z0-9._-]+$")

    @field_validator("api_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        # PowerDNS usually serves its API over plain HTTP on a private network.
        return check_api_url(value, allow_http=True).removesuffix("/api/v1")


class PowerDNSProvider(DNSProvider):
    """TXT values merged into the RRset with PATCH ... changetype REPLACE.

    The API replaces whole RRsets, so adding reads the set and writes it back
    with the value added; calls for the same name from this provider are
    serialized. An empty set is deleted with changetype DELETE.
    """

    name = "powerdns"
    title = "PowerDNS"
    Attributes = PowerDNSAttributes
    attributes: PowerDNSAttributes

    def __init__(
        self, attributes: ProviderAttributes, context: ProviderContext
    ) -> None:
        super().__init__(attributes, context)
        base = f"{self.attributes.api_url}/api/v1/servers/{self.attributes.server_id}"
        self._client = JsonHttpClient(
            self.name,
            base,
            {"X-API-Key": self.attributes.api_key.get_secret_value()},
            context,
        )
        self._zone_ids: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def find_zone(self, fqdn: str) -> str:
        """The most specific zone on the server that contains fqdn."""
        fqdn = normalize_name(fqdn)
        for candidate in candidate_zones(fqdn, min_labels=1):
            reply = await self._client.request(
                "GET", "/zones", params={"zone": candidate + "."}
            )
            for zone in self._check(reply, f"looking up zone {candidate}") or []:
                if normalize_name(zone["name"]) == candidate:
                    self._zone_ids[candidate] = zone["id"]
                    return candidate
        raise self.error(f"the server has no zone containing {fqdn}")

    async def _zone_path(self, zone: str) -> str:
        zone = normalize_name(zone)
        if zone not in self._zone_ids and await self.find_zone(zone) != zone:
            raise self.error(f"the server has no zone {zone}")
        return "/zones/" + quote(self._zone_ids[zone], safe="=.")

    async def add_txt(self, zone: str, fqdn: str, value: str) -> None:
        """REPLACE the TXT RRset at fqdn with value added to its records."""
        fqdn = normalize_name(fqdn)
        path = await self._zone_path(zone)
        async with self._locks.setdefault(fqdn, asyncio.Lock()):
            current = await self._read_txt(path, fqdn)
            records = list(current["records"]) if current else []
            if any(parse_txt(r["content"]) == value for r in records):
                return
            records.append({"content": quote_txt(value), "disabled": False})
            ttl = current["ttl"] if current else TTL
            await self._patch(path, fqdn, "REPLACE", ttl=ttl, records=records)
        self.log.info("txt_record_added", zone=zone, fqdn=fqdn)

    async def remove_txt(self, zone: str, fqdn: str, value: str) -> None:
        """Write back the RRset without value; DELETE it if nothing is left."""
        fqdn = normalize_name(fqdn)
        path = await self._zone_path(zone)
        async with self._locks.setdefault(fqdn, asyncio.Lock()):
            current = await self._read_txt(path, fqdn)
            if current is None:
                return
            rest = [r for r in current["records"] if parse_txt(r["content"]) != value]
            if len(rest) == len(current["records"]):
                return
            if rest:
                await self._patch(
                    path, fqdn, "REPLACE", ttl=current["ttl"], records=rest
                )
            else:
                await self._patch(path, fqdn, "DELETE")
        self.log.info("txt_record_removed", zone=zone, fqdn=fqdn)

    async def _read_txt(self, path: str, fqdn: str) -> dict[str, Any] | None:
        # Servers before 4.8 ignore the filters and send the whole zone.
        reply = await self._client.request(
            "GET", path, params={"rrset_name": fqdn + ".", "rrset_type": "TXT"}
        )
        body = self._check(reply, f"reading the TXT records at {fqdn}") or {}
        for rrset in body.get("rrsets", []):
            if normalize_name(rrset["name"]) == fqdn and rrset["type"] == "TXT":
                return dict(rrset)
        return None

    async def _patch(
        self,
        path: str,
        fqdn: str,
        changetype: str,
        *,
        ttl: int | None = None,
        records: list[dict[str, Any]] | None = None,
    ) -> None:
        rrset: dict[str, Any] = {
            "name": fqdn + ".",
            "type": "TXT",
            "changetype": changetype,
        }
        if changetype == "REPLACE":
            rrset.update(ttl=ttl, records=records)
        reply = await self._client.request("PATCH", path, json={"rrsets": [rrset]})
        self._check(reply, f"writing the TXT records at {fqdn}")

    def _check(self, reply: HttpReply, action: str) -> Any:
        if reply.ok:
            return reply.body
        raise self._api_error(reply, action)

    def _api_error(self, reply: HttpReply, action: str) -> DNSProviderError:
        body = reply.body if isinstance(reply.body, dict) else {}
        message = body.get("error") or reply.text[:200].strip() or "no detail"
        detail = f"HTTP {reply.status}: {message}"
        if reply.status in (401, 403):
            return self.error(
                f"{action}: the API key was rejected: check api_key, and that "
                f"webserver-allow-from admits this host ({detail})"
            )
        if reply.status == 404:
            return self.error(f"{action}: not found: check server_id ({detail})")
        retryable = reply.status == 429 or reply.status >= 500
        return self.error(f"{action}: {detail}", retryable=retryable)

    async def aclose(self) -> None:
        await self._client.aclose()
