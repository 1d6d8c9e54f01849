"""deSEC (desec.io) through its REST API."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

from pydantic import Field, SecretStr, field_validator

from certd.dns.base import (
    DNSProvider,
    ProviderAttributes,
    ProviderContext,
    normalize_name,
    relative_name,
)
from certd.dns.http import HttpReply, JsonHttpClient, check_api_url
from certd.dns.txt import parse_txt, quote_txt
from certd.errors import DNSProviderError

DEFAULT_API_URL = "https://desec.io/api/v1"


class DeSECAttributes(ProviderAttributes):
    """An API token of the deSEC account that owns the domain."""

    token: SecretStr = Field(description="deSEC API token")
    api_url: str = Field(DEFAULT_API_URL, description="Base URL of the API")

    @field_validator("api_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return check_api_url(value)


class DeSECProvider(DNSProvider):
    """TXT values merged into the RRset, written with one atomic bulk PUT.

    deSEC names the responsible domain itself (``owns_qname``) and refuses TTLs
    below the domain's ``minimum_ttl``, which is therefore the TTL used.
    """

    name = "desec"
    title = "deSEC"
    Attributes = DeSECAttributes
    attributes: DeSECAttributes

    def __init__(
        self, attributes: ProviderAttributes, context: ProviderContext
    ) -> None:
        super().__init__(attributes, context)
        token = self.attributes.token.get_secret_value()
        self._client = JsonHttpClient(
            self.name,
            self.attributes.api_url,
            {"Authorization": f"Token {token}"},
            context,
        )
        self._minimum_ttl: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def find_zone(self, fqdn: str) -> str:
        """The account's domain responsible for fqdn, as deSEC determines it."""
        fqdn = normalize_name(fqdn)
        reply = await self._client.request(
            "GET", "/domains/", params={"owns_qname": fqdn}
        )
        domains = self._check(reply, f"looking up the domain of {fqdn}") or []
        if not domains:
            raise self.error(f"no domain of this account contains {fqdn}")
        return normalize_name(domains[0]["name"])

    async def add_txt(self, zone: str, fqdn: str, value: str) -> None:
        """PUT the TXT RRset at fqdn with value added to its records."""
        zone, fqdn = normalize_name(zone), normalize_name(fqdn)
        async with self._locks.setdefault(fqdn, asyncio.Lock()):
            current = await self._read_txt(zone, fqdn)
            records = list(current["records"]) if current else []
            if any(parse_txt(r) == value for r in records):
                return
            ttl = current["ttl"] if current else await self._ttl(zone)
            await self._put(zone, fqdn, ttl, [*records, quote_txt(value)])
        self.log.info("txt_record_added", zone=zone, fqdn=fqdn)

    async def remove_txt(self, zone: str, fqdn: str, value: str) -> None:
        """PUT the RRset without value; an empty record list deletes it."""
        zone, fqdn = normalize_name(zone), normalize_name(fqdn)
        async with self._locks.setdefault(fqdn, asyncio.Lock()):
            current = await self._read_txt(zone, fqdn)
            if current is None:
                return
            rest = [r for r in current["records"] if parse_txt(r) != value]
            if len(rest) == len(current["records"]):
                return
            await self._put(zone, fqdn, current["ttl"], rest)
        self.log.info("txt_record_removed", zone=zone, fqdn=fqdn)

    async def _ttl(self, zone: str) -> int:
        if zone not in self._minimum_ttl:
            reply = await self._client.request("GET", f"/domains/{quote(zone)}/")
            body = self._check(reply, f"reading domain {zone}")
            self._minimum_ttl[zone] = int(body.get("minimum_ttl", 3600))
        return self._minimum_ttl[zone]

    async def _read_txt(self, zone: str, fqdn: str) -> dict[str, Any] | None:
        # the apex has an empty subname, which the URL spells "@"
        subname = relative_name(fqdn, zone) or "@"
        reply = await self._client.request(
            "GET", f"/domains/{quote(zone)}/rrsets/{quote(subname)}/TXT/"
        )
        if reply.status == 404:
            return None
        return dict(self._check(reply, f"reading the TXT records at {fqdn}"))

    async def _put(self, zone: str, fqdn: str, ttl: int, records: list[str]) -> None:
        rrset = {
            "subname": relative_name(fqdn, zone),
            "type": "TXT",
            "ttl": ttl,
            "records": records,
        }
        reply = await self._client.request(
            "PUT", f"/domains/{quote(zone)}/rrsets/", json=[rrset]
        )
        self._check(reply, f"writing the TXT records at {fqdn}")

    def _check(self, reply: HttpReply, action: str) -> Any:
        if reply.ok:
            return reply.body
        raise self._api_error(reply, action)

    def _api_error(self, reply: HttpReply, action: str) -> DNSProviderError:
        body = reply.body
        if isinstance(body, dict) and "detail" in body:
            message = str(body["detail"])
        elif body is not None:
            message = json.dumps(body)[:300]
        else:
            message = reply.text[:200].strip() or "no detail"
        detail = f"HTTP {reply.status}: {message}"
        if reply.status == 401:
            return self.error(
                f"{action}: the token was rejected: check token ({detail})"
            )
        if reply.status == 403:
            return self.error(
                f"{action}: the token may not do this: check its scope and "
                f"policies ({detail})"
            )
        retryable = reply.status == 429 or reply.status >= 500
        return self.error(f"{action}: {detail}", retryable=retryable)

    async def aclose(self) -> None:
        await self._client.aclose()
