"""From stored certificates to the policy's facts and back.

The policy knows dates; this module knows rows: which certificates can be
renewed and how, what their leaf says, and where a plan is written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, NamedTuple

from cryptography import x509
from sqlalchemy import select

from certd.pki.extensions import serial_hex
from certd.renewal.policy import Facts, Plan, PolicySettings, Window, plan
from certd.store.models import Certificate, CertificateAuthority, utcnow

RenewalKind = Literal["acme", "internal"]

# next_attempt_reason values that are not policy reasons.
NOT_RENEWABLE = "not_renewable"
REVOKED = "revoked"
# Signed by a CA of ours that is revoked, expired, holds no key or is gone, or
# that is under a CA of ours revoked or expired: no renewal can be signed
# (until a certificateHold is lifted).
CA_CANNOT_SIGN = "ca_cannot_sign"
# Reasons under which a row has no next attempt.
NOT_PLANNED = (NOT_RENEWABLE, REVOKED, CA_CANNOT_SIGN)
# The RFC 5280 5.3.1 reason of a revocation that can be lifted.
HOLD = "certificateHold"

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
    return _dates_of(row.certificate or "")


def _dates_of(chain_pem: str) -> LeafDates | None:
    """The validity and serial of a chain's first certificate, kept by digest."""
    pem = chain_pem.encode()
    key = hashlib.sha256(pem).digest()
    try:
        return _LEAF_DATES[key]
    except KeyError:
        pass
    try:
        leaf = x509.load_pem_x509_certificate(pem)
    except ValueError:
        dates = None
    else:
        dates = LeafDates(
            leaf.not_valid_before_utc,
            leaf.not_valid_after_utc,
            serial_hex(leaf.serial_number),
        )
    if len(_LEAF_DATES) >= _LEAF_DATES_MAX:
        _LEAF_DATES.clear()
    _LEAF_DATES[key] = dates
    return dates


class SignerFacts(NamedTuple):
    """What planning reads of a CA of ours: whether it, and those above it, can sign."""

    name: str
    revoked: bool
    has_key: bool
    # An RFC 5280 5.3.1 reason name; certificateHold is the one that is lifted.
    revoked_reason: str | None = None
    # The CA certificate's notAfter, when known.
    not_after: datetime | None = None
    # The CA of ours that signed this one, if any.
    parent_id: int | None = None
    # False when the stored CA certificate does not parse.
    readable: bool = True


# CA id -> its facts: every CA of ours, as a CA's ancestors count too.
Signers = Mapping[int, SignerFacts]

# Whether a key is stored is asked of SQL: no key is decrypted for it.
SIGNER_COLUMNS = (
    CertificateAuthority.id,
    CertificateAuthority.name,
    CertificateAuthority.revoked,
    CertificateAuthority.revoked_reason,
    CertificateAuthority.privatekey.is_not(None),
    CertificateAuthority.certificate,
    CertificateAuthority.signedby_id,
)


def signers_from(rows: Iterable[Sequence[Any]]) -> dict[int, SignerFacts]:
    """The facts of CAs read as :data:`SIGNER_COLUMNS`."""
    facts: dict[int, SignerFacts] = {}
    for ca_id, name, revoked, reason, has_key, pem, parent_id in rows:
        dates = _dates_of(pem or "")
        facts[ca_id] = SignerFacts(
            name,
            bool(revoked),
            bool(has_key),
            reason,
            dates.not_after if dates is not None else None,
            parent_id,
            dates is not None,
        )
    return facts


async def load_signers(session: Any, ca_ids: Collection[int | None]) -> Signers:
    """The facts of every CA of ours in one query, if any of ``ca_ids`` is one.

    Every CA, not only those of ``ca_ids``: a CA whose ancestor is revoked
    or expired signs nothing of use either, and CAs are few. A missing id
    is a CA gone.
    """
    if all(ca_id is None for ca_id in ca_ids):
        return {}
    return await all_signers(session)


async def all_signers(session: Any) -> Signers:
    """The facts of every CA of ours, in one query."""
    return signers_from(await session.execute(select(*SIGNER_COLUMNS)))


def authority_problem(ca: SignerFacts, now: datetime) -> str | None:
    """What keeps a CA itself from signing ("is on hold", ...); None if nothing."""
    if ca.revoked:
        if ca.revoked_reason == HOLD:
            return "is on hold"
        return "is revoked and signs no more"
    if not ca.has_key:
        return "has no private key"
    if not ca.readable:
        return "holds a certificate that cannot be read"
    if ca.not_after is not None and ca.not_after <= now:
        return f"expired on {ca.not_after.isoformat()}"
    return None


def ancestor_problem(ca_id: int, signers: Signers, now: datetime) -> str | None:
    """Which CA of ours above ``ca_id`` keeps it from signing; None if none does.

    A path through a revoked or expired CA does not validate (RFC 5280
    6.1.3), so what the CAs below one sign is of no use, whatever their own
    state. The nearest such CA is named.
    """
    seen = {ca_id}
    ca = signers.get(ca_id)
    parent_id = ca.parent_id if ca is not None else None
    role = "parent"
    while parent_id is not None and parent_id not in seen:
        parent = signers.get(parent_id)
        if parent is None:
            return None
        seen.add(parent_id)
        label = f"its {role} CA {parent.name!r}"
        if parent.revoked:
            held = parent.revoked_reason == HOLD
            return f"{label} {'is on hold' if held else 'is revoked'}"
        if parent.not_after is not None and parent.not_after <= now:
            return f"{label} expired on {parent.not_after.isoformat()}"
        parent_id, role = parent.parent_id, "ancestor"
    return None


def chain_problem(ca_id: int, signers: Signers, now: datetime) -> str | None:
    """Why CA ``ca_id`` cannot sign, itself or through a CA above it; None if it can."""
    ca = signers.get(ca_id)
    if ca is None:
        return f"its CA (id {ca_id}) no longer exists"
    own = authority_problem(ca, now)
    if own is not None:
        return f"its CA {ca.name!r} {own}"
    above = ancestor_problem(ca_id, signers, now)
    if above is not None:
        return f"its CA {ca.name!r} cannot sign: {above}"
    return None


def signing_authorities(signers: Signers, now: datetime) -> tuple[set[int], set[int]]:
    """The ids of the CAs of ours that can sign, and of those that cannot."""
    able = {ca_id for ca_id in signers if chain_problem(ca_id, signers, now) is None}
    return able, set(signers) - able


def renewal_kind(row: Certificate) -> RenewalKind | None:
    """How a certificate is renewed: over ACME, by our CA, or not at all."""
    if row.cert_type != "CERTIFICATE" or not row.certificate or row.revoked:
        return None
    if row.acme_account_id is not None and row.acme_directory_uri and row.dns_mapping:
        return "acme"
    if row.signedby_id is not None:
        return "internal"
    return None


def signer_problem(
    row: Any, signers: Signers, now: datetime | None = None
) -> str | None:
    """Why the CA of ours that signed ``row`` cannot sign its renewal; None if it can.

    The CA cannot when it, or a CA of ours above it, is revoked or expired,
    or when it has no key. None as well for a row that is not renewed by
    one of our CAs.
    """
    if renewal_kind(row) != "internal":
        return None
    return chain_problem(row.signedby_id, signers, now or utcnow())


def renewal_refusal(
    row: Certificate, signers: Signers, now: datetime | None = None
) -> str | None:
    """Why ``row`` cannot be renewed now, as the error to give; None if it can."""
    if renewal_kind(row) is None:
        because: str | None = not_renewable_because(row, signers, now)
    else:
        because = signer_problem(row, signers, now)
    return None if because is None else cannot_renew(row.name, because)


def cannot_renew(name: str, because: str) -> str:
    """The error of a renewal refused ``because``."""
    return f"certificate {name!r} cannot be renewed: {because}"


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


def not_renewable_because(
    row: Certificate, signers: Signers | None = None, now: datetime | None = None
) -> str:
    """Why ``row`` cannot be renewed, for error messages and events.

    ``signers``, when given, holds the CAs of ours, whose state is then
    part of the answer.
    """
    if row.cert_type != "CERTIFICATE":
        return "it is a CSR"
    if not row.certificate:
        return "it holds no certificate"
    if row.revoked:
        return "it is revoked"
    if signers is not None:
        problem = signer_problem(row, signers, now)
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
    of ours; without it, the CAs' state is not looked at and a row its CA
    already stopped keeps that verdict (the tick reconsiders such rows once
    their CA can sign again).
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
            blocked = signer_problem(row, signers, now) is not None
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
