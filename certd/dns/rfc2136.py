"""RFC 2136 dynamic updates signed with TSIG (RFC 8945), as BIND's nsupdate does."""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import re
import socket
from typing import Any, Literal

import dns.asyncquery
import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.tsig
import dns.update
from pydantic import Field, SecretStr, field_validator

from certd.dns.base import (
    DNSProvider,
    ProviderAttributes,
    ProviderContext,
    candidate_zones,
    in_zone,
    normalize_name,
)
from certd.errors import DNSProviderError

TTL = 60
TSIG_ALGORITHMS = {
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
    "hmac-md5": dns.tsig.HMAC_MD5,
}
TsigAlgorithm = Literal[
    "hmac-sha256", "hmac-sha1", "hmac-sha224", "hmac-sha384", "hmac-sha512", "hmac-md5"
]
HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*"
    r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$"
)
TSIG_FIX = "check tsig_key_name/tsig_secret/tsig_algorithm"


class RFC2136Attributes(ProviderAttributes):
    """The primary server accepting updates and the TSIG key to sign them."""

    server: str = Field(description="Host name or IP address of the primary server")
    port: int = Field(53, ge=1, le=65535)
    tsig_key_name: str = Field(description="Name of the TSIG key, as on the server")
    tsig_secret: SecretStr = Field(description="Base64 secret of the TSIG key")
    tsig_algorithm: TsigAlgorithm = "hmac-sha256"
    zone: str | None = Field(None, description="Zone to update; found by SOA if unset")

    @field_validator("server")
    @classmethod
    def _check_server(cls, value: str) -> str:
        value = value.strip().rstrip(".").lower()
        try:
            return str(ipaddress.ip_address(value.strip("[]")))
        except ValueError:
            pass
        if not HOSTNAME.match(value):
            raise ValueError("must be a host name or an IP address")
        return value

    @field_validator("tsig_key_name")
    @classmethod
    def _check_key_name(cls, value: str) -> str:
        try:
            dns.name.from_text(value)
        except dns.exception.DNSException as exc:
            raise ValueError(f"not a valid key name: {exc}") from exc
        return normalize_name(value)

    @field_validator("tsig_secret")
    @classmethod
    def _check_secret(cls, value: SecretStr) -> SecretStr:
        try:
            decoded = base64.b64decode(value.get_secret_value(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("must be base64, as tsig-keygen prints it") from None
        if not decoded:
            raise ValueError("must not be empty")
        return value

    @field_validator("tsig_algorithm", mode="before")
    @classmethod
    def _normalize_algorithm(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower().rstrip(".")
            # BIND spells HMAC-MD5 with its RFC 2845 domain-style name
            if value == "hmac-md5.sig-alg.reg.int":
                value = "hmac-md5"
        return value

    @field_validator("zone", mode="before")
    @classmethod
    def _normalize_zone(cls, value: Any) -> Any:
        if value == "":
            return None
        return normalize_name(value) if isinstance(value, str) else value


class RFC2136Provider(DNSProvider):
    """TXT values added and deleted one by one with TSIG-signed UPDATEs over TCP."""

    name = "rfc2136"
    title = "RFC 2136 (nsupdate)"
    Attributes = RFC2136Attributes
    attributes: RFC2136Attributes

    def __init__(
        self, attributes: ProviderAttributes, context: ProviderContext
    ) -> None:
        super().__init__(attributes, context)
        attrs = self.attributes
        self._key = dns.tsig.Key(
            attrs.tsig_key_name,
            attrs.tsig_secret.get_secret_value(),
            TSIG_ALGORITHMS[attrs.tsig_algorithm],
        )
        self._address: str | None = None

    @property
    def _server(self) -> str:
        return f"{self.attributes.server}:{self.attributes.port}"

    async def find_zone(self, fqdn: str) -> str:
        """The configured zone, or the zone whose SOA the server gives for fqdn.

        Raises:
            DNSProviderError: the server is not authoritative for any parent.
        """
        fqdn = normalize_name(fqdn)
        configured = self.attributes.zone
        if configured is not None:
            if not in_zone(fqdn, configured):
                raise self.error(f"{fqdn} is not in the configured zone {configured}")
            return configured

        for candidate in candidate_zones(fqdn, min_labels=1):
            query = dns.message.make_query(candidate, dns.rdatatype.SOA)
            query.use_tsig(self._key)
            response = await self._exchange(query, tcp=False)
            if response.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                continue
            # The SOA comes in the answer at the apex, and in the authority
            # section (owner = zone apex) for any other name in the zone.
            for rrset in (*response.answer, *response.authority):
                if rrset.rdtype == dns.rdatatype.SOA:
                    zone = normalize_name(rrset.name.to_text())
                    if in_zone(fqdn, zone):
                        return zone
        raise self.error(
            f"{self._server} is authoritative for no zone containing {fqdn}: "
            "point server at the zone's primary or set zone"
        )

    async def add_txt(self, zone: str, fqdn: str, value: str) -> None:
        """UPDATE-add one TXT value; other values at the name stay (RFC 2136 §2.5.1)."""
        update = self._update(zone)
        update.add(_absolute(fqdn), TTL, _txt(value))
        await self._send_update(update, zone, fqdn)
        self.log.info("txt_record_added", zone=zone, fqdn=fqdn)

    async def remove_txt(self, zone: str, fqdn: str, value: str) -> None:
        """UPDATE-delete exactly this TXT value (RFC 2136 §2.5.4)."""
        update = self._update(zone)
        update.delete(_absolute(fqdn), _txt(value))
        await self._send_update(update, zone, fqdn)
        self.log.info("txt_record_removed", zone=zone, fqdn=fqdn)

    def _update(self, zone: str) -> dns.update.UpdateMessage:
        return dns.update.UpdateMessage(_absolute(zone), keyring=self._key)

    async def _send_update(
        self, update: dns.update.UpdateMessage, zone: str, fqdn: str
    ) -> None:
        response = await self._exchange(update, tcp=True)
        rcode = response.rcode()
        if rcode == dns.rcode.NOERROR:
            return
        name = dns.rcode.to_text(rcode)
        key = self.attributes.tsig_key_name
        if rcode == dns.rcode.REFUSED:
            message = (
                f"REFUSED: the key {key} may not update {zone} on {self._server} "
                "(check the zone's update-policy or allow-update)"
            )
        elif rcode == dns.rcode.NOTAUTH:
            message = (
                f"NOTAUTH: {self._server} is not authoritative for {zone}: "
                "point server at the zone's primary or set zone"
            )
        elif rcode == dns.rcode.NOTZONE:
            message = f"NOTZONE: {fqdn} is outside zone {zone}"
        elif rcode == dns.rcode.SERVFAIL:
            raise self.error(
                f"SERVFAIL from {self._server} updating {zone}", retryable=True
            )
        else:
            message = f"{name} from {self._server} updating {fqdn} in {zone}"
        raise self.error(message)

    async def _exchange(
        self, message: dns.message.Message, *, tcp: bool
    ) -> dns.message.Message:
        """Send one message to the server; map transport and TSIG failures."""
        where = await self._server_address()
        port = self.attributes.port
        timeout = self.context.request_timeout
        try:
            if tcp:
                return await dns.asyncquery.tcp(
                    message, where, timeout=timeout, port=port
                )
            response, _ = await dns.asyncquery.udp_with_fallback(
                message, where, timeout=timeout, port=port
            )
            return response
        except (dns.tsig.PeerBadKey, dns.tsig.PeerBadSignature) as exc:
            raise self._tsig_error(exc) from exc
        except dns.tsig.PeerBadTime as exc:
            raise self.error(
                f"TSIG key rejected by {self._server} (BADTIME): the clocks of this "
                "host and the server differ by more than the allowed fudge"
            ) from exc
        except (
            dns.tsig.PeerError,
            dns.message.UnknownTSIGKey,
            dns.tsig.BadSignature,
            dns.tsig.BadKey,
            dns.tsig.BadAlgorithm,
        ) as exc:
            raise self._tsig_error(exc) from exc
        except dns.exception.Timeout as exc:
            raise self.error(
                f"no answer from {self._server} within {timeout:g} s", retryable=True
            ) from exc
        except OSError as exc:
            raise self.error(
                f"cannot reach {self._server}: {exc.strerror or exc}", retryable=True
            ) from exc
        except dns.exception.DNSException as exc:
            raise self.error(f"bad answer from {self._server}: {exc}") from exc

    def _tsig_error(self, exc: Exception) -> DNSProviderError:
        code = ""
        if isinstance(exc, dns.tsig.PeerBadKey):
            code = " (BADKEY)"
        elif isinstance(exc, dns.tsig.PeerBadSignature):
            code = " (BADSIG)"
        return self.error(f"TSIG key rejected by {self._server}{code}: {TSIG_FIX}")

    async def _server_address(self) -> str:
        if self._address is not None:
            return self._address
        server = self.attributes.server
        try:
            ipaddress.ip_address(server)
        except ValueError:
            loop = asyncio.get_running_loop()
            try:
                infos = await loop.getaddrinfo(
                    server, self.attributes.port, type=socket.SOCK_STREAM
                )
            except OSError as exc:
                raise self.error(
                    f"cannot resolve server {server}: {exc}", retryable=True
                ) from exc
            server = str(infos[0][4][0])
        self._address = server
        return server


def _absolute(name: str) -> dns.name.Name:
    return dns.name.from_text(normalize_name(name) + ".")


def _txt(value: str) -> dns.rdtypes.ANY.TXT.TXT:
    """One TXT rdata holding value; split in 255-octet strings (RFC 1035 §3.3.14)."""
    raw = value.encode()
    chunks = [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]
    return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks)
