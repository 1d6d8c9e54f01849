"""Certificate entries kept small enough for an inventory of thousands.

An entry has over fifty fields. Kept as dicts, with the description of the
chain beside them, ten thousand entries held about 100 MB. Here a row is kept
as two tuples, its own values and its description's, in fixed orders; the
fields that move with the clock (``days_left``, ``expired``) or repeat others
(``chain_list``, the nested ``acme`` and ``renewal`` objects, ``issuer``) are
computed when read, and ``extensions`` is kept as JSON text. Queries filter
and order the records themselves, read-only mappings; only the entries a query
returns become dicts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from certd.api.pki_models import HOLD
from certd.api.pki_store import issuer_label
from certd.pki.inspect import FIELDS, describe_certificate, describe_csr

_END = "-----END CERTIFICATE-----\n"

# The row's own values, in this order (names as the entry query labels them).
ROW_FIELDS: tuple[str, ...] = (
    "id",
    "name",
    "cert_type",
    "create_type",
    "certificate",
    "csr",
    "has_privatekey",
    "csr_id",
    "signedby_id",
    "authority_name",
    "acme_account_id",
    "acme_directory_uri",
    "acme_uri",
    "dns_mapping",
    "renew_days",
    "reuse_key",
    "revoked",
    "revoked_at",
    "revoked_reason",
    "next_attempt_at",
    "last_attempt_at",
    "last_error",
    "failure_count",
    "created_at",
)


def split_chain(text: str) -> list[str]:
    """The certificates of a PEM chain, each with its END line, in order."""
    return [part + _END for part in text.split(_END)[:-1]]


class Description(NamedTuple):
    """What the certificate's (or CSR's) text says, in :data:`FIELDS` order."""

    digest: bytes
    values: tuple[Any, ...]
    not_after: datetime | None
    # chain_list is the stored text cut at each END line, so it is not kept.
    chain_from_text: bool


def describe(text: str, kind: str, digest: bytes) -> Description:
    """Parse ``text`` once: a chain when ``kind`` is "cert", else a CSR.

    ``digest`` is the text's :func:`digest_of`, which the caller has at hand.
    """
    described = describe_certificate(text) if kind == "cert" else describe_csr(text)
    chain = described.get("chain_list")
    from_text = chain is not None and split_chain(text) == chain
    if from_text:
        described["chain_list"] = None
    # Decoded extensions are a tree of small dicts, a kilobyte a certificate;
    # few queries read them, so they are kept as their JSON text.
    described["extensions"] = json.dumps(described["extensions"], separators=(",", ":"))
    if described["san"] is not None:
        described["san"] = tuple(described["san"])
    after = described.get("not_valid_after") if kind == "cert" else None
    return Description(
        digest,
        tuple(described[name] for name in FIELDS),
        datetime.fromisoformat(after) if after else None,
        from_text,
    )


def digest_of(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


class Record(Mapping[str, Any]):
    """One row as the entry cache keeps it, read as its entry.

    Kept for as long as the row is unchanged and read by every query, so a
    query allocates nothing per row it does not return. ``days_left`` and
    ``expired`` are computed at each read.
    """

    __slots__ = ("description", "row", "version")

    def __init__(
        self, version: tuple[Any, ...], row: tuple[Any, ...], description: Description
    ) -> None:
        self.version = version
        self.row = row
        self.description = description

    def __getitem__(self, key: str) -> Any:
        return _GETTERS[key](self, datetime.now(UTC))

    def __contains__(self, key: object) -> bool:
        return key in _GETTERS

    def __iter__(self) -> Iterator[str]:
        return iter(_GETTERS)

    def __len__(self) -> int:
        return len(_GETTERS)

    def as_dict(self, now: datetime | None = None) -> dict[str, Any]:
        """The entry, every field read at one moment (by default, this one)."""
        now = now or datetime.now(UTC)
        return {name: get(self, now) for name, get in _GETTERS.items()}


_ROW = {name: index for index, name in enumerate(ROW_FIELDS)}
_DESC = {name: index for index, name in enumerate(FIELDS)}
_TYPE, _CERT = _ROW["cert_type"], _ROW["certificate"]

Getter = Callable[[Record, datetime], Any]


def _row_value(name: str) -> Getter:
    index = _ROW[name]
    return lambda record, _now: record.row[index]


def _described(name: str) -> Getter:
    index = _DESC[name]
    return lambda record, _now: record.description.values[index]


def _days_left(record: Record, now: datetime) -> Any:
    after = record.description.not_after
    if after is None:
        return record.description.values[_DESC["days_left"]]
    return (after - now).days


def _expired(record: Record, now: datetime) -> Any:
    after = record.description.not_after
    if after is None:
        return record.description.values[_DESC["expired"]]
    return now > after


def _san(record: Record, _now: datetime) -> Any:
    san = record.description.values[_DESC["san"]]
    return None if san is None else list(san)


def _extensions(record: Record, _now: datetime) -> Any:
    return json.loads(record.description.values[_DESC["extensions"]])


def _chain_list(record: Record, _now: datetime) -> Any:
    if record.description.chain_from_text:
        return split_chain(record.row[_CERT] or "")
    return record.description.values[_DESC["chain_list"]]


def _issuer(record: Record, now: datetime) -> Any:
    if record.row[_TYPE] == "CSR":
        return None
    return issuer_label(record, record.row[_ROW["authority_name"]])


def _can_be_revoked(record: Record, _now: datetime) -> bool:
    row = record.row
    return (
        row[_ROW["signedby_id"]] is not None
        and row[_TYPE] == "CERTIFICATE"
        and row[_ROW["acme_account_id"]] is None
        and (not row[_ROW["revoked"]] or row[_ROW["revoked_reason"]] == HOLD)
    )


def _acme(record: Record, _now: datetime) -> Any:
    row = record.row
    if row[_ROW["acme_account_id"]] is None:
        return None
    return {
        "account_id": row[_ROW["acme_account_id"]],
        "directory": row[_ROW["acme_directory_uri"]],
        "order_uri": row[_ROW["acme_uri"]],
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _iso_of(name: str) -> Getter:
    index = _ROW[name]
    return lambda record, _now: _iso(record.row[index])


def _renewal(record: Record, _now: datetime) -> dict[str, Any]:
    row = record.row
    return {
        "next_attempt_at": _iso(row[_ROW["next_attempt_at"]]),
        "last_attempt_at": _iso(row[_ROW["last_attempt_at"]]),
        "last_error": row[_ROW["last_error"]],
        "failure_count": row[_ROW["failure_count"]],
    }


# Every field of an entry, in the order an entry lists them.
_GETTERS: dict[str, Getter] = {
    **{name: _described(name) for name in FIELDS},
    "san": _san,
    "days_left": _days_left,
    "expired": _expired,
    "chain_list": _chain_list,
    "extensions": _extensions,
    "id": _row_value("id"),
    "name": _row_value("name"),
    "cert_type": _row_value("cert_type"),
    "cert_type_CSR": lambda record, _now: record.row[_TYPE] == "CSR",
    "create_type": _row_value("create_type"),
    "certificate": _row_value("certificate"),
    "CSR": _row_value("csr"),
    "has_privatekey": lambda record, _now: bool(record.row[_ROW["has_privatekey"]]),
    "csr_id": _row_value("csr_id"),
    "signedby": _row_value("signedby_id"),
    "issuer": _issuer,
    "can_be_revoked": _can_be_revoked,
    "acme": _acme,
    "dns_mapping": lambda record, _now: record.row[_ROW["dns_mapping"]] or {},
    "renew_days": _row_value("renew_days"),
    "reuse_key": _row_value("reuse_key"),
    "add_to_trusted_store": lambda _record, _now: False,
    "revoked": _row_value("revoked"),
    "revoked_at": _iso_of("revoked_at"),
    "revoked_reason": _row_value("revoked_reason"),
    "renewal": _renewal,
    "created_at": _iso_of("created_at"),
}
ENTRY_FIELDS = frozenset(_GETTERS)


def record_of(row: Any, previous: Record | None) -> Record:
    """The record of a row of the entry query, reusing an unchanged description."""
    values = tuple(getattr(row, name) for name in ROW_FIELDS)
    kind = "csr" if row.cert_type == "CSR" else "cert"
    text = (row.csr if kind == "csr" else row.certificate) or ""
    digest = digest_of(text)
    if previous is not None and previous.description.digest == digest:
        description = previous.description
    else:
        description = describe(text, kind, digest)
    return Record((row.version, row.authority_name, row.csr_id), values, description)
