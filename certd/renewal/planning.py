"""From stored certificates to the policy's facts and back.

The policy knows dates; this module knows rows: which certificates can be
renewed and how, what their leaf says, and where a plan is written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any, Literal, NamedTuple

from cryptography import x509
from sqlalchemy import select

from certd.pki.extensions import serial_hex
from certd.renewal.policy import Facts, Plan, PolicySettings, Window, plan
from certd.store.models import Certificate, CertificateAuthority

RenewalKind = Literal["acme", "internal"]

# next_attempt_reason values that are not policy reasons.
NOT_RENEWABLE = "not_renewable"
REVOKED = "revoked"
# Signed by a CA of ours that is revoked, holds no key or is gone: no renewal
# can be signed (until a certificateHold on the CA is lifted).
CA_CANNOT_SIGN = "ca_cannot_sign"
# Reasons under which a row has no next attempt.
NOT_PLANNED = (NOT_RENEWABLE, REVOKED, CA_CANNOT_SIGN)

# How certificates signed by one of our CAs were made; such a row without a
# signer lost its CA to a forced certificateauthority.delete.
_SIGNED_HERE = frozenset({"CERTIFICATE_CREATE_INTERNAL", "CA_SIGN_CSR"})


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


class SignerFacts(NamedTuple):
    """What planning reads of a CA of ours: whether it can sign a renewal."""

    name: str
    revoked: bool
    has_key: bool


# CA id -> its facts, for the CAs that signed a batch of certificates.
Signers = Mapping[int, SignerFacts]


async def load_signers(session: Any, ca_ids: Collection[int | None]) -> Signers:
    """The facts of the CAs ``ca_ids``, in one query; a missing id is a CA gone."""
    wanted = {ca_id for ca_id in ca_ids if ca_id is not None}
    if not wanted:
        return {}
    # Whether a key is stored is asked of SQL: no key is decrypted for it.
    rows = await session.execute(
        select(
            CertificateAuthority.id,
            CertificateAuthority.name,
            CertificateAuthority.revoked,
            CertificateAuthority.privatekey.is_not(None),
        ).where(CertificateAuthority.id.in_(wanted))
    )
    return {
        ca_id: SignerFacts(name, bool(revoked), bool(has_key))
        for ca_id, name, revoked, has_key in rows
    }


def renewal_kind(row: Certificate) -> RenewalKind | None:
    """How a certificate is renewed: over ACME, by our CA, or not at all."""
    if row.cert_type != "CERTIFICATE" or not row.certificate or row.revoked:
        return None
    if row.acme_account_id is not None and row.acme_directory_uri and row.dns_mapping:
        return "acme"
    if row.signedby_id is not None:
        return "internal"
    return None


def signer_problem(row: Any, signers: Signers) -> str | None:
    """Why the CA of ours that signed ``row`` cannot sign its renewal; None if it can.

    None as well for a row that is not renewed by one of our CAs.
    """
    if renewal_kind(row) != "internal":
        return None
    ca = signers.get(row.signedby_id)
    if ca is None:
        return f"its CA (id {row.signedby_id}) no longer exists"
    if ca.revoked:
        return f"its CA {ca.name!r} is revoked and signs no more"
    if not ca.has_key:
        return f"its CA {ca.name!r} has no private key"
    return None


def lost_its_ca(row: Certificate) -> bool:
    """Whether ``row`` was signed by a CA of ours that was deleted since."""
    return (
        row.cert_type == "CERTIFICATE"
        and bool(row.certificate)
        and not row.revoked
        and row.acme_account_id is None
        and row.signedby_id is None
        and row.create_type in _SIGNED_HERE
    )


def not_renewable_because(row: Certificate, signers: Signers | None = None) -> str:
    """Why ``row`` cannot be renewed, for error messages and events.

    ``signers``, when given, holds the CA that signed it, whose state is
    then part of the answer.
    """
    if row.cert_type != "CERTIFICATE":
        return "it is a CSR"
    if not row.certificate:
        return "it holds no certificate"
    if row.revoked:
        return "it is revoked"
    if signers is not None:
        problem = signer_problem(row, signers)
        if problem is not None:
            return problem
    if row.acme_account_id is not None:
        return "its ACME directory or dns_mapping is missing"
    if lost_its_ca(row):
        return "its CA was deleted"
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


def plan_row(
    row: Certificate,
    settings: PolicySettings,
    now: datetime,
    signers: Signers | None = None,
) -> Plan | None:
    """Compute the row's next attempt and write it to the row.

    A row that cannot be renewed gets no time and a reason saying why, so
    that it is not looked at again on every tick. ``signers`` holds the CA
    that signed the row; without it, the CA's state is not looked at and a
    row its CA already stopped keeps that verdict (the tick reconsiders
    such rows once their CA can sign again).
    """
    leaf = leaf_dates(row)
    if row.revoked:
        row.next_attempt_at, row.next_attempt_reason = None, REVOKED
        return None
    kind = renewal_kind(row)
    if kind is None or leaf is None:
        row.next_attempt_at, row.next_attempt_reason = None, NOT_RENEWABLE
        return None
    if kind == "internal":
        if signers is not None:
            blocked = signer_problem(row, signers) is not None
        else:
            blocked = row.next_attempt_reason == CA_CANNOT_SIGN
        if blocked:
            row.next_attempt_at, row.next_attempt_reason = None, CA_CANNOT_SIGN
            return None
    result = plan(facts_for(row, leaf), settings, now)
    if row.next_attempt_at != result.at:
        row.next_attempt_at = result.at
    row.next_attempt_reason = result.reason
    return result
