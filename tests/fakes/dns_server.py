"""A tiny authoritative DNS server that serves a provider fake's TXT records.

pebble validates DNS-01 by asking one DNS server for the TXT record; for the
REST providers (Cloudflare, Route 53) the records live in a fake of the
vendor's API instead of a zone file. This server answers from such a store:
SOA and NS at each zone apex, ``ns1.<zone>`` and the apex as 127.0.0.1, and
TXT from the source at the moment of the query. It listens on UDP and TCP of
one 127.0.0.1 port, in threads of its own, so a source may make blocking calls
(moto runs in a thread of the test process too). Every TXT answer is recorded,
so a test can see what the CA and certd's propagation check were shown.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

TTL = 1


class RecordSource(Protocol):
    """Where the served zones and their TXT values come from."""

    def zones(self) -> Iterable[str]:
        """Names of the zones to answer for, lower case, no trailing dot."""

    def txt(self, fqdn: str) -> list[str]:
        """The TXT values at ``fqdn`` right now (joined strings, unquoted)."""


@dataclass
class StaticRecords:
    """A source held in memory: zone names and TXT values by name."""

    zone_names: set[str] = field(default_factory=set)
    values: dict[str, list[str]] = field(default_factory=dict)

    def zones(self) -> Iterable[str]:
        return self.zone_names

    def txt(self, fqdn: str) -> list[str]:
        return list(self.values.get(fqdn, ()))


@dataclass(frozen=True)
class CallbackRecords:
    """A source made of two functions over some fake's state."""

    zone_names: Callable[[], Iterable[str]]
    txt_values: Callable[[str], list[str]]

    def zones(self) -> Iterable[str]:
        return self.zone_names()

    def txt(self, fqdn: str) -> list[str]:
        return self.txt_values(fqdn)


@dataclass(frozen=True)
class Served:
    """One TXT answer the server gave."""

    name: str
    values: tuple[str, ...]


class FakeAuthoritativeDNS:
    """Answers for the zones of :attr:`source`; see the module docstring."""

    def __init__(self, host: str, port: int, source: RecordSource) -> None:
        self.host = host
        self.port = port
        self.source = source
        self.served: list[Served] = []
        # called with every TXT answer before it is sent, e.g. to take a look
        # at a vendor's state while the CA is validating
        self.on_txt: Callable[[Served], None] | None = None
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        """``host:port`` as pebble's ``-dnsserver`` and certd's resolvers take it."""
        return f"{self.host}:{self.port}"

    def served_at(self, fqdn: str) -> list[tuple[str, ...]]:
        """The value sets answered for ``fqdn``, in order."""
        with self._lock:
            return [s.values for s in self.served if s.name == fqdn]

    def answer(self, wire: bytes) -> bytes | None:
        """The response to one query in wire format; None for garbage."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        response.flags &= ~dns.flags.RA
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        try:
            self._fill(response, question.name, question.rdtype)
        except Exception:  # a failing source must look like a broken server
            response.set_rcode(dns.rcode.SERVFAIL)
        return response.to_wire()

    def _fill(
        self,
        response: dns.message.Message,
        qname: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
    ) -> None:
        name = qname.to_text().rstrip(".").lower()
        zone = _longest_zone(name, self.source.zones())
        if zone is None:
            response.flags &= ~dns.flags.AA
            response.set_rcode(dns.rcode.REFUSED)
            return
        origin = dns.name.from_text(zone + ".")
        answers: list[str] = []
        if rdtype == dns.rdatatype.SOA and name == zone:
            answers = [f"ns1.{zone}. hostmaster.{zone}. 1 60 60 3600 1"]
        elif rdtype == dns.rdatatype.NS and name == zone:
            answers = [f"ns1.{zone}."]
        elif rdtype == dns.rdatatype.A and name in (zone, f"ns1.{zone}"):
            answers = ["127.0.0.1"]
        elif rdtype == dns.rdatatype.TXT:
            values = tuple(self.source.txt(name))
            served = Served(name, values)
            with self._lock:
                self.served.append(served)
            if self.on_txt is not None:
                self.on_txt(served)
            if values:
                response.answer.append(_txt_rrset(qname, values))
            else:
                response.authority.append(_soa(origin, zone))
            return
        if answers:
            response.answer.append(
                dns.rrset.from_text_list(qname, TTL, "IN", rdtype, answers)
            )
        else:
            response.authority.append(_soa(origin, zone))


def _longest_zone(name: str, zones: Iterable[str]) -> str | None:
    matches = [z for z in zones if name == z or name.endswith("." + z)]
    return max(matches, key=len) if matches else None


def _soa(origin: dns.name.Name, zone: str) -> dns.rrset.RRset:
    return dns.rrset.from_text(
        origin, TTL, "IN", "SOA", f"ns1.{zone}. hostmaster.{zone}. 1 60 60 3600 1"
    )


def _txt_rrset(qname: dns.name.Name, values: tuple[str, ...]) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(qname, dns.rdataclass.IN, dns.rdatatype.TXT)
    for value in values:
        raw = value.encode()
        chunks = [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]
        rrset.add(
            dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks),
            TTL,
        )
    return rrset


class _UDPHandler(socketserver.BaseRequestHandler):
    server: _UDPServer

    def handle(self) -> None:
        data, sock = self.request
        reply = self.server.dns.answer(data)
        if reply is not None:
            sock.sendto(reply, self.client_address)


class _TCPHandler(socketserver.BaseRequestHandler):
    server: _TCPServer

    def handle(self) -> None:
        sock = self.request
        # one connection may carry several length-prefixed messages (RFC 7766)
        while True:
            header = _read_exactly(sock, 2)
            if header is None:
                return
            data = _read_exactly(sock, struct.unpack("!H", header)[0])
            if data is None:
                return
            reply = self.server.dns.answer(data)
            if reply is None:
                return
            sock.sendall(struct.pack("!H", len(reply)) + reply)


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class _UDPServer(socketserver.ThreadingMixIn, socketserver.UDPServer):
    daemon_threads = True
    allow_reuse_address = True
    dns: FakeAuthoritativeDNS


class _TCPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    dns: FakeAuthoritativeDNS


@contextlib.contextmanager
def serve_dns(
    source: RecordSource | None = None, *, port: int | None = None
) -> Iterator[FakeAuthoritativeDNS]:
    """Serve ``source`` on UDP and TCP of one free port of 127.0.0.1."""
    from tests.testbed import free_port

    dns_server = FakeAuthoritativeDNS(
        "127.0.0.1", port or free_port(), source or StaticRecords()
    )
    address = (dns_server.host, dns_server.port)
    servers: list[_UDPServer | _TCPServer] = []
    threads: list[threading.Thread] = []
    try:
        servers.append(_UDPServer(address, _UDPHandler))
        servers.append(_TCPServer(address, _TCPHandler))
        for server in servers:
            server.dns = dns_server
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}
            )
            thread.daemon = True
            thread.start()
            threads.append(thread)
        yield dns_server
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        for thread in threads:
            thread.join(5)
