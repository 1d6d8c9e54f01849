"""Finding PEM blocks (RFC 7468) in text that may hold more than PEM."""

from __future__ import annotations

import re

_ANY_BLOCK_RE = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")


def to_bytes(data: str | bytes) -> bytes:
    """Input as bytes with LF line ends."""
    raw = data.encode("utf-8", "replace") if isinstance(data, str) else bytes(data)
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


_MARKER_RE = re.compile(rb"-----(BEGIN|END) ([A-Z0-9 ]+)-----")


def pem_blocks(data: str | bytes, labels: tuple[str, ...]) -> list[bytes]:
    """Every PEM block whose label is one of ``labels``, in input order.

    Text between blocks (``Bag Attributes``, ``subject=`` lines, comments) is
    skipped, and so are blocks with other labels.
    """
    wanted = {label.encode("ascii") for label in labels}
    raw = to_bytes(data)
    blocks: list[bytes] = []
    # One pass over the markers: a BEGIN opens a block, the next END with the
    # same label closes it. Searching forward from every BEGIN instead would
    # take quadratic time on input full of unterminated BEGIN lines.
    opened: tuple[bytes, int] | None = None
    for marker in _MARKER_RE.finditer(raw):
        kind, label = marker.group(1), marker.group(2)
        if kind == b"BEGIN":
            if label in wanted:
                opened = (label, marker.start())
            else:
                opened = None
        elif opened is not None and label == opened[0]:
            blocks.append(_tidy(raw[opened[1] : marker.end()]))
            opened = None
    return blocks


def _tidy(block: bytes) -> bytes:
    # Indented or space-padded lines (from YAML, e-mail) would defeat the
    # decoder; empty lines stay, as they end RFC 1421 headers (DEK-Info).
    return b"\n".join(line.strip() for line in block.split(b"\n")) + b"\n"


def missing_pem_reason(data: str | bytes, what: str) -> str:
    """Say why no PEM block of the wanted kind was found in ``data``."""
    raw = to_bytes(data)
    if not raw.strip():
        return f"no {what} given (the input is empty)"
    if raw[:1] == b"\x30" and b"-----BEGIN" not in raw:
        return (
            f"the {what} looks like binary DER; give it in PEM form "
            "(-----BEGIN ...-----)"
        )
    other = _ANY_BLOCK_RE.search(raw)
    if other:
        label = other.group(1).decode("ascii", "replace")
        return f"no {what} found; the input holds a {label} block instead"
    return f"no PEM {what} found in the input"
