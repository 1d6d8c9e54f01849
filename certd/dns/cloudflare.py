"""Cloudflare DNS through the v4 REST API."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator

from certd.dns.base import (
    AttributeRuleError,
    DNSProvider,
    ProviderAttributes,
    ProviderContext,
    candidate_zones,
    in_zone,
    normalize_name,
)
from certd.dns.http import HttpReply, JsonHttpClient, check_api_url
from certd.errors import DNSProviderError

DEFAULT_API_URL = "https://api.cloudflare.com/client/v4"
# 120 s is the lowest TTL Cloudflare accepts on non-enterprise zones; a short
# TTL keeps a stale negative answer from outliving the challenge.
TTL = 120
PAGE_SIZE = 100

# Codes that mean the credentials themselves are wrong, whatever the zone.
CREDENTIAL_ERRORS: dict[int, str] = {
    6003: "the request headers were rejected",
    6111: "the Authorization header was rejected: api_token must be an API token "
    "(not the global API key) and contain no spaces or quotes",
    6103: "the X-Auth-Key header was rejected: api_key must be the global API key; "
    "use api_token for a scoped token",
    9103: "Cloudflare does not know this cloudflare_email/api_key pair: "
    "check both fields",
    9106: "no credentials reached Cloudflare: set api_token, or cloudflare_email "
    "with api_key",
    9109: "the API token is invalid, expired or not allowed from this address: "
    "check api_token or create a new one with Zone:Read and DNS:Edit",
}
ZONE_NOT_FOUND = frozenset({1001, 1003, 7000, 7003})
PERMISSION_DENIED = 10000
RECORD_EXISTS = frozenset({81057, 81058})
RECORD_MISSING = 81044


class CloudflareAttributes(ProviderAttributes):
    """Either a scoped API token or the account email with the global API key."""

    api_token: SecretStr | None = Field(
        None, description="API token with Zone:Read and DNS:Edit on the zone"
    )
    cloudflare_email: str | None = Field(
        None, description="Account email, only with the global api_key"
    )
    api_key: SecretStr | None = Field(None, description="Global API key")
    zone_id: str | None = Field(
        None, description="Zone id; skips zone lookup (tokens without Zone:Read)"
    )
    api_url: str = Field(DEFAULT_API_URL, description="Base URL of the v4 API")

    @field_validator(
        "api_token", "cloudflare_email", "api_key", "zone_id", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("api_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return check_api_url(value)

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> CloudflareAttributes:
        has_key_part = self.cloudflare_email is not None or self.api_key is not None
        if self.api_token is not None:
            if has_key_part:
                raise AttributeRuleError(
                    "api_token",
                    "give either api_token or cloudflare_email with api_key, not both",
                )
        elif self.cloudflare_email is not None and self.api_key is None:
            raise AttributeRuleError("api_key", "required with cloudflare_email")
        elif self.api_key is not None and self.cloudflare_email is None:
            raise AttributeRuleError("cloudflare_email", "required with api_key")
        elif not has_key_part:
            raise AttributeRuleError(
                "api_token", "give api_token, or cloudflare_email with api_key"
            )
        return self


class CloudflareProvider(DNSProvider):
    """TXT records in Cloudflare zones, found by walking up the record name."""

    name = "cloudflare"
    title = "Cloudflare"
    Attributes = CloudflareAttributes
    attributes: CloudflareAttributes

    def __init__(
        self, attributes: ProviderAttributes, context: ProviderContext
    ) -> None:
        super().__init__(attributes, context)
        self._client = JsonHttpClient(
            self.name, self.attributes.api_url, self._auth_headers(), context
        )
        self._zone_ids: dict[str, str] = {}

    def _auth_headers(self) -> dict[str, str]:
        attrs = self.attributes
        if attrs.api_token is not None:
            return {"Authorization": f"Bearer {attrs.api_token.get_secret_value()}"}
        assert attrs.cloudflare_email is not None and attrs.api_key is not None
        return {
            "X-Auth-Email": attrs.cloudflare_email,
            "X-Auth-Key": attrs.api_key.get_secret_value(),
        }

    async def find_zone(self, fqdn: str) -> str:
        """The most specific zone visible to the credentials that contains fqdn.

        Raises:
            DNSProviderError: no such zone, or the credentials are rejected.
        """
        fqdn = normalize_name(fqdn)
        if self.attributes.zone_id is not None:
            return await self._configured_zone(fqdn)

        refused: list[str] = []
        for candidate in candidate_zones(fqdn):
            reply = await self._client.request(
                "GET", "/zones", params={"name": candidate, "per_page": 50}
            )
            # A token scoped to some zones answers 403 for names outside them;
            # that only rules this candidate out, the parent may still match.
            if reply.status == 403 and not _credential_codes(reply):
                refused.append(candidate)
                continue
            body = self._check(reply, f"looking up zone {candidate}")
            for zone in body.get("result") or []:
                if normalize_name(zone["name"]) == candidate:
                    self._zone_ids[candidate] = zone["id"]
                    return candidate

        hint = (
            f"; lookups of {', '.join(refused)} were refused (403)" if refused else ""
        )
        raise self.error(
            f"no zone containing {fqdn} is visible to these credentials{hint}: "
            "check the zone is on this account and the token has Zone:Read on it, "
            "or set zone_id"
        )

    async def _configured_zone(self, fqdn: str) -> str:
        zone_id = self.attributes.zone_id
        reply = await self._client.request("GET", f"/zones/{zone_id}")
        body = self._check(reply, f"reading zone_id {zone_id}")
        zone = normalize_name(body["result"]["name"])
        if not in_zone(fqdn, zone):
            raise self.error(f"zone_id {zone_id} is zone {zone}, which has no {fqdn}")
        self._zone_ids[zone] = str(zone_id)
        return zone

    async def _zone_id(self, zone: str) -> str:
        zone = normalize_name(zone)
        if zone not in self._zone_ids:
            if await self.find_zone(zone) != zone:
                raise self.error(f"zone {zone} is not visible to these credentials")
        return self._zone_ids[zone]

    async def add_txt(self, zone: str, fqdn: str, value: str) -> None:
        """Create one TXT record; an identical existing record counts as added."""
        zone_id = await self._zone_id(zone)
        record = {"type": "TXT", "name": normalize_name(fqdn), "content": value}
        reply = await self._client.request(
            "POST", f"/zones/{zone_id}/dns_records", json={**record, "ttl": TTL}
        )
        if reply.status == 400 and RECORD_EXISTS & _codes(reply):
            self.log.info("txt_record_already_present", zone=zone, fqdn=fqdn)
            return
        self._check(reply, f"adding a TXT record at {fqdn}", zone=zone)
        self.log.info("txt_record_added", zone=zone, fqdn=fqdn)

    async def remove_txt(self, zone: str, fqdn: str, value: str) -> None:
        """Delete every TXT record at fqdn whose content is value, and no other."""
        zone_id = await self._zone_id(zone)
        fqdn = normalize_name(fqdn)
        # Cloudflare may store TXT content quoted; both forms are our value.
        contents = {value, f'"{value}"'}
        record_ids = [
            record["id"]
            for record in await self._list_txt(zone, zone_id, fqdn)
            if record.get("content") in contents
        ]
        for record_id in record_ids:
            reply = await self._client.request(
                "DELETE", f"/zones/{zone_id}/dns_records/{record_id}"
            )
            if reply.status == 404 and RECORD_MISSING in _codes(reply):
                continue
            self._check(reply, f"deleting the TXT record at {fqdn}", zone=zone)
        self.log.info("txt_record_removed", zone=zone, fqdn=fqdn, count=len(record_ids))

    async def _list_txt(
        self, zone: str, zone_id: str, fqdn: str
    ) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        page = 1
        while True:
            reply = await self._client.request(
                "GET",
                f"/zones/{zone_id}/dns_records",
                params={
                    "type": "TXT",
                    "name": fqdn,
                    "page": page,
                    "per_page": PAGE_SIZE,
                },
            )
            body = self._check(reply, f"listing TXT records at {fqdn}", zone=zone)
            records.extend(body.get("result") or [])
            info = body.get("result_info") or {}
            if page >= int(info.get("total_pages") or 1):
                return records
            page += 1

    def _check(self, reply: HttpReply, action: str, *, zone: str | None = None) -> Any:
        """The envelope of a successful reply, or the matching provider error."""
        if reply.ok and not isinstance(reply.body, dict):
            # A proxy's error page or a cut-off body: not an answer to act on.
            raise self.error(
                f"{action}: the API answered HTTP {reply.status} without its JSON "
                f"envelope ({reply.text[:120]!r}); check api_url",
                retryable=True,
            )
        body = reply.body if isinstance(reply.body, dict) else {}
        if reply.ok and body.get("success", True):
            return body
        raise self._api_error(reply, action, zone)

    def _api_error(
        self, reply: HttpReply, action: str, zone: str | None
    ) -> DNSProviderError:
        codes = _codes(reply)
        detail = _error_text(reply)
        # an error_chain entry says more than the generic 6003 it hangs under
        credential = sorted(codes & CREDENTIAL_ERRORS.keys(), key=lambda c: c == 6003)
        if credential:
            message = CREDENTIAL_ERRORS[credential[0]]
            return self.error(f"{action}: {message} ({detail})")
        if PERMISSION_DENIED in codes or reply.status == 403:
            where = f"zone {zone}" if zone else "this zone"
            return self.error(
                f"{action}: the credentials may not do this on {where}: grant the "
                f"token Zone:Read and DNS:Edit on it ({detail})"
            )
        if ZONE_NOT_FOUND & codes:
            return self.error(f"{action}: zone not found: check zone_id ({detail})")
        retryable = reply.status == 429 or reply.status >= 500
        return self.error(f"{action}: {detail}", retryable=retryable)

    async def aclose(self) -> None:
        await self._client.aclose()


def _errors(reply: HttpReply) -> list[dict[str, Any]]:
    """Every error entry of the envelope, including each one's error_chain."""
    body = reply.body if isinstance(reply.body, dict) else {}
    found: list[dict[str, Any]] = []
    pending = list(body.get("errors") or [])
    while pending:
        entry = pending.pop(0)
        if isinstance(entry, dict):
            found.append(entry)
            pending.extend(entry.get("error_chain") or [])
    return found


def _codes(reply: HttpReply) -> set[int]:
    codes = set()
    for entry in _errors(reply):
        try:
            codes.add(int(entry.get("code", 0)))
        except (TypeError, ValueError):
            continue
    return codes


def _credential_codes(reply: HttpReply) -> set[int]:
    return _codes(reply) & set(CREDENTIAL_ERRORS)


def _error_text(reply: HttpReply) -> str:
    entries = _errors(reply)
    if not entries:
        return f"HTTP {reply.status}: {reply.text[:200]!r}"
    listed = "; ".join(
        f"{e.get('code')} {e.get('message', '')}".strip() for e in entries
    )
    return f"HTTP {reply.status}: {listed}"
