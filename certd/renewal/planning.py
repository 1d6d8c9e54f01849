"""From stored certificates to the policy's facts and back.

The policy knows dates; this module knows rows: which certificates can be
renewed and how, what their leaf says, and where a plan is written.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Literal, NamedTuple

from cryptography import x509

from certd.pki.extensions import serial_hex
from certd.renewal.policy import Facts, Plan, PolicySettings, Window, plan
from certd.store.models import Certificate

RenewalKind = Literal["acme", "internal"]

# next_attempt_reason values that are not policy reasons.
NOT_RENEWABLE = "not_renewable"
REVOKED = "revoked"


class LeafDates(NamedTuple):
    """What planning and events read from a certificate: validity and serial."""

    not_before: datetime
    not_after: datetime
    serial: str


# Kept by the chain's digest for every stored certificate: a few hundred bytes
# each, where a parsed certificate would hold several kilobytes.
_LEAF_DATES: dict[bytes, LeafDates | None] = {}
_LEAF_DATES_MAX = 100_000


def leaf_of(row: Certificate) -> x509.Certificate | None:
    """The first certificate of the row's chain, parsed; None when it cannot be."""
    try:
        return x509.load_pem_x509_certificate((row.certificate or "").encode())
    except ValueError:
        return None


def leaf_dates(row: Certificate) -> LeafDates | None:
    """The validity and serial of the row's leaf; None when it cannot be read."""
    pem = (row.certificate or "").encode()
    key = hashlib.sha256(pem).digest()
    try:
        return _LEAF_DATES[key]
    except KeyError:
        pass
    leaf = leaf_of(row)
    dates = (
        None
        if leaf is None
        else LeafDates(
            leaf.not_valid_before_utc,
            leaf.not_valid_after_utc,
            serial_hex(leaf.serial_number),
        )
    )
    if len(_LEAF_DATES) >= _LEAF_DATES_MAX:
        _LEAF_DATES.clear()
    _LEAF_DATES[key] = dates
    return dates


def renewal_kind(row: Certificate) -> RenewalKind | None:
    """How a certificate is renewed: over ACME, by our CA, or not at all."""
    if row.cert_type != "CERTIFICATE" or not row.certificate or row.revoked:
        return None
    if row.acme_account_id is not None and row.acme_directory_uri and row.dns_mapping:
        return "acme"
    if row.signedby_id is not None:
        return "internal"
    return None


def not_renewable_because(row: Certificate) -> str:
    """Why :func:`renewal_kind` found no way to renew ``row``, for error messages."""
    if row.cert_type != "CERTIFICATE":
        return "it is a CSR"
    if not row.certificate:
        return "it holds no certificate"
    if row.revoked:
        return "it is revoked"
    if row.acme_account_id is not None:
        return "its ACME directory or dns_mapping is missing"
    return "it was neither ordered over ACME nor signed by one of certd's CAs"


def facts_for(row: Certificate, leaf: LeafDates) -> Facts:
    ari = None
    if row.ari_window_start is not None and row.ari_window_end is not None:
        ari = Window(row.ari_window_start, row.ari_window_end)
    return Facts(
        not_before=leaf.not_before,
        not_after=leaf.not_after,
        renew_days=row.renew_days,
        failure_count=row.failure_count,
        last_attempt_at=row.last_attempt_at,
        retry_not_before=row.retry_not_before,
        ari_window=ari,
        seed=leaf.serial,
    )


def plan_row(row: Certificate, settings: PolicySettings, now: datetime) -> Plan | None:
    """Compute the row's next attempt and write it to the row.

    A row that cannot be renewed gets no time and a reason saying why, so
    that it is not looked at again on every tick.
    """
    leaf = leaf_dates(row)
    if row.revoked:
        row.next_attempt_at, row.next_attempt_reason = None, REVOKED
        return None
    if renewal_kind(row) is None or leaf is None:
        row.next_attempt_at, row.next_attempt_reason = None, NOT_RENEWABLE
        return None
    result = plan(facts_for(row, leaf), settings, now)
    if row.next_attempt_at != result.at:
        row.next_attempt_at = result.at
    row.next_attempt_reason = result.reason
    return result
