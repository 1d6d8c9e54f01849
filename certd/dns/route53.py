"""Amazon Route 53 through aiobotocore."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from pydantic import Field, SecretStr, field_validator

from certd.dns.base import (
    DNSProvider,
    ProviderAttributes,
    ProviderContext,
    in_zone,
    normalize_name,
)
from certd.dns.http import check_api_url
from certd.dns.txt import parse_txt, quote_txt
from certd.errors import DNSProviderError

TTL = 60
COMMENT = "certd ACME DNS-01 challenge"
RETRY_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "PriorRequestNotComplete",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalError",
    }
)
CREDENTIAL_CODES = {
    "InvalidClientTokenId": "AWS does not know access_key_id",
    "UnrecognizedClientException": "AWS does not know access_key_id",
    "SignatureDoesNotMatch": "secret_access_key does not belong to access_key_id",
    "InvalidSignatureException": "secret_access_key does not belong to access_key_id",
    "ExpiredToken": "the credentials have expired",
    "AccessDenied": "the IAM user may not do this; allow route53:ListHostedZones, "
    "route53:GetHostedZone, route53:ListResourceRecordSets, "
    "route53:ChangeResourceRecordSets and route53:GetChange",
}
CREDENTIAL_CODES["AccessDeniedException"] = CREDENTIAL_CODES["AccessDenied"]
# A DELETE whose values no longer match the set: someone changed it meanwhile.
CHANGED_MEANWHILE = re.compile(r"values provided do not match|not found", re.IGNORECASE)
ESCAPED_OCTET = re.compile(r"\\(\d{3})")


class Route53Attributes(ProviderAttributes):
    """An IAM access key allowed to change the hosted zone's records."""

    access_key_id: str = Field(min_length=16, max_length=128)
    secret_access_key: SecretStr
    region: str = Field("us-east-1", pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$")
    endpoint_url: str | None = Field(None, description="Route 53 API URL (testing)")
    hosted_zone_id: str | None = Field(None, description="Skips the zone lookup")

    @field_validator("access_key_id")
    @classmethod
    def _check_key_id(cls, value: str) -> str:
        if not value.isalnum():
            raise ValueError("must be letters and digits only, like AKIA...")
        return value

    @field_validator("endpoint_url", "hosted_zone_id", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("endpoint_url")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        return None if value is None else check_api_url(value)

    @field_validator("hosted_zone_id")
    @classmethod
    def _strip_prefix(cls, value: str | None) -> str | None:
        return None if value is None else value.removeprefix("/hostedzone/")


class Route53Provider(DNSProvider):
    """TXT values merged into the record set of the most specific public zone.

    Route 53 keeps one record set per name and type and has no "add one value"
    change, so adding reads the set, appends the value and UPSERTs the union;
    removing writes back the rest, or DELETEs the set when nothing else is left.
    Calls for the same name from this provider are serialized; a change made by
    another writer between the read and the write can still be overwritten.
    """

    name = "route53"
    title = "Amazon Route 53"
    Attributes = Route53Attributes
    attributes: Route53Attributes

    def __init__(
        self, attributes: ProviderAttributes, context: ProviderContext
    ) -> None:
        super().__init__(attributes, context)
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._zone_ids: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def _route53(self) -> Any:
        if self._client is None:
            attrs = self.attributes
            timeout = self.context.request_timeout
            config = AioConfig(
                connect_timeout=timeout,
                read_timeout=timeout,
                # retries are ours: they honour the context and log each attempt
                retries={"mode": "standard", "total_max_attempts": 1},
            )
            self._client = await self._stack.enter_async_context(
                get_session().create_client(
                    "route53",
                    region_name=attrs.region,
                    endpoint_url=attrs.endpoint_url,
                    aws_access_key_id=attrs.access_key_id,
                    aws_secret_access_key=attrs.secret_access_key.get_secret_value(),
                    config=config,
                )
            )
        return self._client

    async def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        """One API call, retried on throttling and transient failures."""
        client = await self._route53()
        attempts = max(1, self.context.max_attempts)
        for attempt in range(1, attempts + 1):
            try:
                result: dict[str, Any] = await getattr(client, operation)(**params)
                return result
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code not in RETRY_CODES or attempt == attempts:
                    raise
                reason = code
            except (BotoConnectionError, HTTPClientError) as exc:
                if attempt == attempts:
                    raise self.error(
                        f"{operation} failed: {exc}", retryable=True
                    ) from exc
                reason = type(exc).__name__
            except BotoCoreError as exc:
                raise self.error(f"{operation} failed: {exc}") from exc
            delay = self.context.retry_delay(attempt)
            self.log.info(
                "route53_call_retried",
                operation=operation,
                reason=reason,
                attempt=attempt,
                delay=delay,
            )
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _client_error(self, exc: ClientError, action: str) -> DNSProviderError:
        error = exc.response.get("Error", {})
        code = error.get("Code", "")
        detail = f"{code}: {error.get('Message', '')}".strip()
        if code in CREDENTIAL_CODES:
            return self.error(f"{action}: {CREDENTIAL_CODES[code]} ({detail})")
        if code == "NoSuchHostedZone":
            return self.error(
                f"{action}: no such hosted zone; check hosted_zone_id ({detail})"
            )
        return self.error(f"{action}: {detail}", retryable=code in RETRY_CODES)

    async def find_zone(self, fqdn: str) -> str:
        """The most specific public hosted zone containing fqdn.

        Raises:
            DNSProviderError: no public zone matches, or two share the best name.
        """
        fqdn = normalize_name(fqdn)
        if self.attributes.hosted_zone_id is not None:
            return await self._configured_zone(fqdn)
        try:
            zones = await self._public_zones()
        except ClientError as exc:
            raise self._client_error(exc, "listing hosted zones") from exc

        matches = [(name, zone_id) for name, zone_id in zones if in_zone(fqdn, name)]
        if not matches:
            raise self.error(
                f"no public hosted zone contains {fqdn}: check the zone is in this "
                "account or set hosted_zone_id"
            )
        best = max(len(name) for name, _ in matches)
        chosen = [(name, zone_id) for name, zone_id in matches if len(name) == best]
        if len(chosen) > 1:
            ids = ", ".join(zone_id for _, zone_id in chosen)
            raise self.error(
                f"{len(chosen)} public hosted zones are named {chosen[0][0]} ({ids}): "
                "set hosted_zone_id to the one the domain is delegated to"
            )
        name, zone_id = chosen[0]
        self._zone_ids[name] = zone_id
        return name

    async def _public_zones(self) -> list[tuple[str, str]]:
        zones: list[tuple[str, str]] = []
        params: dict[str, str] = {}
        while True:
            page = await self._call("list_hosted_zones", **params)
            for zone in page.get("HostedZones", []):
                # A private zone answers only inside its VPCs; the CA never sees it.
                if zone.get("Config", {}).get("PrivateZone"):
                    continue
                zones.append((_name(zone["Name"]), _zone_id(zone["Id"])))
            if not page.get("IsTruncated"):
                return zones
            params = {"Marker": page["NextMarker"]}

    async def _configured_zone(self, fqdn: str) -> str:
        zone_id = str(self.attributes.hosted_zone_id)
        try:
            reply = await self._call("get_hosted_zone", Id=zone_id)
        except ClientError as exc:
            raise self._client_error(exc, f"reading hosted zone {zone_id}") from exc
        zone = _name(reply["HostedZone"]["Name"])
        if not in_zone(fqdn, zone):
            raise self.error(
                f"hosted_zone_id {zone_id} is zone {zone}, which has no {fqdn}"
            )
        self._zone_ids[zone] = zone_id
        return zone

    async def _zone_id(self, zone: str) -> str:
        zone = normalize_name(zone)
        if zone not in self._zone_ids and await self.find_zone(zone) != zone:
            raise self.error(f"{zone} is not a public hosted zone of this account")
        return self._zone_ids[zone]

    def _lock(self, fqdn: str) -> asyncio.Lock:
        return self._locks.setdefault(fqdn, asyncio.Lock())

    async def add_txt(self, zone: str, fqdn: str, value: str) -> None:
        """UPSERT the TXT set at fqdn with value added to what is there."""
        fqdn = normalize_name(fqdn)
        zone_id = await self._zone_id(zone)
        async with self._lock(fqdn):
            try:
                current = await self._read_txt(zone_id, fqdn)
                records = list(current["ResourceRecords"]) if current else []
                if any(parse_txt(r["Value"]) == value for r in records):
                    return
                records.append({"Value": quote_txt(value)})
                ttl = current["TTL"] if current else TTL
                await self._change(zone_id, "UPSERT", fqdn, ttl, records)
            except ClientError as exc:
                raise self._client_error(exc, f"adding a TXT value at {fqdn}") from exc
        self.log.info("txt_record_added", zone=zone, fqdn=fqdn)

    async def remove_txt(self, zone: str, fqdn: str, value: str) -> None:
        """Write back the TXT set without value; DELETE it if nothing else is left."""
        fqdn = normalize_name(fqdn)
        zone_id = await self._zone_id(zone)
        async with self._lock(fqdn):
            try:
                await self._remove(zone_id, fqdn, value)
            except ClientError as exc:
                raise self._client_error(
                    exc, f"removing a TXT value at {fqdn}"
                ) from exc
        self.log.info("txt_record_removed", zone=zone, fqdn=fqdn)

    async def _remove(self, zone_id: str, fqdn: str, value: str) -> None:
        for attempt in range(1, self.context.max_attempts + 1):
            current = await self._read_txt(zone_id, fqdn)
            if current is None:
                return
            records = current["ResourceRecords"]
            rest = [r for r in records if parse_txt(r["Value"]) != value]
            if len(rest) == len(records):
                return
            try:
                if rest:
                    await self._change(zone_id, "UPSERT", fqdn, current["TTL"], rest)
                else:
                    # DELETE must name the set exactly as it is now.
                    await self._change(zone_id, "DELETE", fqdn, current["TTL"], records)
                return
            except ClientError as exc:
                error = exc.response.get("Error", {})
                changed = error.get("Code") == "InvalidChangeBatch" and bool(
                    CHANGED_MEANWHILE.search(error.get("Message", ""))
                )
                if not changed or attempt == self.context.max_attempts:
                    raise
                self.log.info("txt_record_set_changed_meanwhile", fqdn=fqdn)

    async def _read_txt(self, zone_id: str, fqdn: str) -> dict[str, Any] | None:
        """The TXT set at fqdn with simple routing, or None."""
        page = await self._call(
            "list_resource_record_sets",
            HostedZoneId=zone_id,
            StartRecordName=fqdn + ".",
            StartRecordType="TXT",
            MaxItems="1",
        )
        for rrset in page.get("ResourceRecordSets", []):
            if (
                _name(rrset["Name"]) == fqdn
                and rrset["Type"] == "TXT"
                and "SetIdentifier" not in rrset
            ):
                return rrset
        return None

    async def _change(
        self,
        zone_id: str,
        action: str,
        fqdn: str,
        ttl: int,
        records: list[dict[str, str]],
    ) -> None:
        reply = await self._call(
            "change_resource_record_sets",
            HostedZoneId=zone_id,
            ChangeBatch={
                "Comment": COMMENT,
                "Changes": [
                    {
                        "Action": action,
                        "ResourceRecordSet": {
                            "Name": fqdn + ".",
                            "Type": "TXT",
                            "TTL": ttl,
                            "ResourceRecords": records,
                        },
                    }
                ],
            },
        )
        await self._wait_insync(reply["ChangeInfo"])

    async def _wait_insync(self, change: dict[str, Any]) -> None:
        """Poll GetChange until Route 53 reports the change on all its servers."""
        deadline = time.monotonic() + self.context.change_timeout
        interval = self.context.change_poll_interval
        while change["Status"] != "INSYNC":
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self.error(
                    f"change {change['Id']} still {change['Status']} after "
                    f"{self.context.change_timeout:g} s",
                    retryable=True,
                )
            await asyncio.sleep(min(interval, remaining))
            interval = min(interval * 1.5, 10.0)
            change = (await self._call("get_change", Id=change["Id"]))["ChangeInfo"]

    async def aclose(self) -> None:
        await self._stack.aclose()
        self._client = None


def _zone_id(raw: str) -> str:
    return raw.removeprefix("/hostedzone/")


def _name(raw: str) -> str:
    """A Route 53 name with its \\ooo octal escapes (e.g. \\052 for *) decoded."""
    return normalize_name(ESCAPED_OCTET.sub(lambda m: chr(int(m.group(1), 8)), raw))
