"""TXT values in zone-file syntax, as REST APIs that take record text expect them."""

from __future__ import annotations

import dns.exception
import dns.rdata
import dns.rdataclass
import dns.rdatatype


def quote_txt(value: str) -> str:
    """value as quoted strings of at most 255 octets (RFC 1035 §3.3.14, §5.1)."""
    raw = value.encode()
    chunks = [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]
    return " ".join('"' + "".join(map(_escape_octet, c)) + '"' for c in chunks)


def _escape_octet(octet: int) -> str:
    if octet in (0x22, 0x5C):  # " and \
        return "\\" + chr(octet)
    if 0x20 <= octet < 0x7F:
        return chr(octet)
    return f"\\{octet:03d}"


def parse_txt(text: str) -> str | None:
    """The joined strings of a TXT value in zone-file syntax; None if it is not one."""
    try:
        rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, text)
    except dns.exception.DNSException:
        return None
    return b"".join(rdata.strings).decode(errors="replace")  # type: ignore[attr-defined]
