"""DigitalOcean DNS through the v2 REST API."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from pydantic import Field, SecretStr, field_validator

from certd.dns.base import (
    DNSProvider,
    ProviderAttributes,
    ProviderContext,
    candidate_zones,
    normalize_name,
    relative_name,
)
from certd.dns.http import HttpReply, JsonHttpClient, check_api_url
from certd.errors import DNSProviderError

DEFAULT_API_URL = "https://api.digitalocean.com/v2"
TTL = 30  # the lowest TTL DigitalOcean accepts
PAGE_SIZE = 200


class DigitalOceanAttributes(ProviderAttributes):
    """A personal access token with read and write access to domains."""

    digitalocean_token: SecretStr = Field(
        description="Personal access token (scopes domain:read, domain:create, "
        "domain:delete)"
    )
    api_url: str = Field(DEFAULT_API_URL, description="Base URL of the v2 API")

    @field_validator("api_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return check_api_url(value)


class DigitalOceanProvider(DNSProvider):
    """TXT records in DigitalOcean domains, found by walking up the name."""

    name = "digitalocean"
    title = "DigitalOcean"
    Attributes = DigitalOceanAttributes
    attributes: DigitalOceanAttributes

    def __init__(
        self, attributes: ProviderAttributes, context: ProviderContext
    ) -> None:
        super().__init__(attributes, context)
        token = self.attributes.digitalocean_token.get_secret_value()
        self._client = JsonHttpClient(
            self.name,
            self.attributes.api_url,
            {"Authorization": f"Bearer {token}"},
            context,
        )

    async def find_zone(self, fqdn: str) -> str:
        """The most specific DigitalOcean domain that contains fqdn."""
        fqdn = normalize_name(fqdn)
        for candidate in candidate_zones(fqdn):
            reply = await self._client.request("GET", f"/domains/{quote(candidate)}")
            if reply.status == 404:
                continue
            self._check(reply, f"looking up domain {candidate}")
            return candidate
        raise self.error(
            f"no domain of this account contains {fqdn}: add the domain under "
            "Networking > Domains"
        )

    async def add_txt(self, zone: str, fqdn: str, value: str) -> None:
        """Create one TXT record; other records at the name stay."""
        zone, fqdn = normalize_name(zone), normalize_name(fqdn)
        if await self._matching_ids(zone, fqdn, value):
            return
        record = {
            "type": "TXT",
            "name": relative_name(fqdn, zone) or "@",
            "data": value,
            "ttl": TTL,
        }
        reply = await self._client.request(
            "POST", f"/domains/{quote(zone)}/records", json=record
        )
        self._check(reply, f"adding a TXT record at {fqdn}")
        self.log.info("txt_record_added", zone=zone, fqdn=fqdn)

    async def remove_txt(self, zone: str, fqdn: str, value: str) -> None:
        """Delete the TXT records at fqdn whose data is value, and no other."""
        zone, fqdn = normalize_name(zone), normalize_name(fqdn)
        record_ids = await self._matching_ids(zone, fqdn, value)
        for record_id in record_ids:
            reply = await self._client.request(
                "DELETE", f"/domains/{quote(zone)}/records/{record_id}"
            )
            if reply.status != 404:  # already gone is what we wanted
                self._check(reply, f"deleting the TXT record at {fqdn}")
        self.log.info("txt_record_removed", zone=zone, fqdn=fqdn, count=len(record_ids))

    async def _matching_ids(self, zone: str, fqdn: str, value: str) -> list[int]:
        ids: list[int] = []
        page = 1
        while True:
            reply = await self._client.request(
                "GET",
                f"/domains/{quote(zone)}/records",
                params={
                    "type": "TXT",
                    "name": fqdn,
                    "page": page,
                    "per_page": PAGE_SIZE,
                },
            )
            body = self._check(reply, f"listing TXT records at {fqdn}")
            ids += [
                r["id"] for r in body.get("domain_records", []) if r["data"] == value
            ]
            if not (body.get("links") or {}).get("pages", {}).get("next"):
                return ids
            page += 1

    def _check(self, reply: HttpReply, action: str) -> Any:
        """The parsed body of a successful reply, or the matching provider error."""
        if reply.ok:
            return reply.body if isinstance(reply.body, dict) else {}
        raise self._api_error(reply, action)

    def _api_error(self, reply: HttpReply, action: str) -> DNSProviderError:
        body = reply.body if isinstance(reply.body, dict) else {}
        detail = f"HTTP {reply.status}: {body.get('id', '')} {body.get('message', '')}"
        detail = (
            detail.strip() if body else f"HTTP {reply.status}: {reply.text[:200]!r}"
        )
        if reply.status == 401:
            return self.error(
                f"{action}: the token was rejected: check digitalocean_token ({detail})"
            )
        if reply.status == 403:
            return self.error(
                f"{action}: the token may not do this: give it the domain read, "
                f"create and delete scopes ({detail})"
            )
        retryable = reply.status == 429 or reply.status >= 500
        return self.error(f"{action}: {detail}", retryable=retryable)

    async def aclose(self) -> None:
        await self._client.aclose()
