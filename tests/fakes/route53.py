"""A proxy in front of moto's Route 53 that adds what moto never does.

moto applies every change at once and never throttles. The proxy forwards
each request to moto unchanged, but can first answer with Route 53's XML
error for throttling (HTTP 400, ``Throttling`` or ``PriorRequestNotComplete``),
can report changes as ``PENDING`` for a number of polls before ``INSYNC``, and
can hold every read of record sets for a while, which widens the window
between a client's read and its write as a slow API would.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from certd.dns.txt import parse_txt

ERROR_XML = """<?xml version="1.0"?>
<ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">
  <Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>
  <RequestId>00000000-0000-0000-0000-000000000000</RequestId>
</ErrorResponse>
"""
MESSAGES = {
    "Throttling": "Rate exceeded",
    "PriorRequestNotComplete": "The request was rejected because Route 53 was "
    "still processing a prior request.",
}
FORWARDED_HEADERS = (
    "Authorization",
    "Content-Type",
    "X-Amz-Date",
    "X-Amz-Content-SHA256",
)


@dataclass
class Route53Proxy:
    """Forwards to ``upstream`` (moto); see the module docstring for the extras."""

    upstream: str
    # set by whoever serves the app, e.g. http://127.0.0.1:PORT
    url: str = ""
    calls: list[str] = field(default_factory=list)
    pending_reports: int = 0
    # seconds each ListResourceRecordSets is held before it is forwarded
    read_delay: float = 0.0
    _failures: list[str] = field(default_factory=list)

    def fail_next(self, code: str, *, times: int = 1) -> None:
        """Answer the next ``times`` requests with this Route 53 error code."""
        self._failures.extend([code] * times)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        return app

    async def _forward(self, request: web.Request) -> web.Response:
        self.calls.append(f"{request.method} {request.path}")
        if self._failures:
            code = self._failures.pop(0)
            return web.Response(
                status=400,
                content_type="text/xml",
                text=ERROR_XML.format(code=code, message=MESSAGES.get(code, code)),
            )
        if self.read_delay and request.method == "GET" and "/rrset" in request.path:
            await asyncio.sleep(self.read_delay)
        body = await request.read()
        headers = {
            k: request.headers[k] for k in FORWARDED_HEADERS if k in request.headers
        }
        async with aiohttp.ClientSession() as session:
            async with session.request(
                request.method,
                self.upstream + request.path_qs,
                data=body,
                headers=headers,
            ) as reply:
                text = await reply.text()
                status = reply.status
                content_type = reply.content_type
        if self.pending_reports > 0 and "<Status>INSYNC</Status>" in text:
            self.pending_reports -= 1
            text = text.replace("<Status>INSYNC</Status>", "<Status>PENDING</Status>")
        return web.Response(status=status, text=text, content_type=content_type)


class MotoRoute53Records:
    """A DNS server's view of the public hosted zones in moto (see dns_server).

    Read through the Route 53 API with boto3, so what is served is exactly what
    a client listing the record sets would see; the calls block, which is why
    the DNS server answers in threads of its own.
    """

    def __init__(self, client: Any) -> None:
        self._client = client

    def zones(self) -> list[str]:
        """Names of the public hosted zones."""
        names: list[str] = []
        for page in self._client.get_paginator("list_hosted_zones").paginate():
            for zone in page["HostedZones"]:
                if not zone.get("Config", {}).get("PrivateZone"):
                    names.append(_decode_name(zone["Name"]))
        return names

    def txt(self, fqdn: str) -> list[str]:
        """The values of the TXT set at ``fqdn`` (most specific zone), unquoted."""
        fqdn = fqdn.rstrip(".").lower()
        zone_id = self._zone_id(fqdn)
        if zone_id is None:
            return []
        page = self._client.list_resource_record_sets(
            HostedZoneId=zone_id,
            StartRecordName=fqdn + ".",
            StartRecordType="TXT",
            MaxItems="1",
        )
        for rrset in page["ResourceRecordSets"]:
            if _decode_name(rrset["Name"]) == fqdn and rrset["Type"] == "TXT":
                return [parse_txt(r["Value"]) or "" for r in rrset["ResourceRecords"]]
        return []

    def _zone_id(self, fqdn: str) -> str | None:
        found: list[tuple[int, str]] = []
        for zone in self._client.list_hosted_zones()["HostedZones"]:
            name = _decode_name(zone["Name"])
            if zone.get("Config", {}).get("PrivateZone"):
                continue
            if fqdn == name or fqdn.endswith("." + name):
                found.append((len(name), zone["Id"]))
        return max(found)[1] if found else None


def _decode_name(raw: str) -> str:
    """A Route 53 name with \\ooo escapes decoded, lower case, no trailing dot."""
    return (
        re.sub(r"\\(\d{3})", lambda m: chr(int(m.group(1), 8)), raw).rstrip(".").lower()
    )
