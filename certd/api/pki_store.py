"""Local CAs as the API uses them: loading a signer, chains, revocations, CRLs.

A CA row stores its certificate followed by its issuers up to the root; a
certificate it issues is stored as a TLS server sends it, the leaf and the
intermediates, without a self-signed root. Revocations live in their own
table, one row per serial, and are the only input of a CA's CRL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from certd.api.pki_params import Parsed, pki_field_error, readdress
from certd.errors import PkiError, ValidationError
from certd.pki.crl import build_crl
from certd.pki.extensions import crl_url, serial_hex
from certd.pki.importing import check_key_matches
from certd.pki.keys import PrivateKey, PublicKey, load_stored_private_key
from certd.pki.models import Digest
from certd.pki.names import build_name
from certd.pki.pem import pem_blocks
from certd.pki.sign import build_certificate
from certd.renewal.planning import HOLD, ancestor_problem, load_signers
from certd.store.db import Database
from certd.store.models import CertificateAuthority, Revocation, utcnow

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Signer:
    """A CA of ours that can sign: its certificate, key and chain (CA first).

    ``crl_url`` is where relying parties fetch its CRL, named in what it
    signs; None when no ``[pki] crl_base_url`` is configured.
    """

    id: int
    name: str
    cert: x509.Certificate
    key: PrivateKey
    chain: list[x509.Certificate]
    crl_url: str | None = None

    def issued_chain(self, leaf: x509.Certificate) -> list[x509.Certificate]:
        """What to store for a certificate this CA issued: leaf and intermediates."""
        return [leaf, *without_root(self.chain)]


def issuer_label(described: Mapping[str, Any], authority: str | None) -> str | None:
    """Who issued it, as the list shows: our CA's name, self-signed or external."""
    if authority is not None:
        return authority
    if not described.get("parsed") or described.get("self_signed") is None:
        return None
    return "self-signed" if described["self_signed"] else "external"


def load_chain(pem: str) -> list[x509.Certificate]:
    """Every certificate of a stored PEM chain, in stored order.

    Raises:
        PkiError: a block cannot be read.
    """
    certs = []
    for index, block in enumerate(pem_blocks(pem, ("CERTIFICATE",))):
        try:
            certs.append(x509.load_pem_x509_certificate(block))
        except ValueError as exc:
            raise PkiError(f"certificate {index} cannot be read: {exc}") from None
    if not certs:
        raise PkiError("no certificate is stored")
    return certs


def chain_pem(certs: list[x509.Certificate]) -> str:
    """Certificates as concatenated PEM blocks."""
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def without_root(certs: list[x509.Certificate]) -> list[x509.Certificate]:
    """A chain without its self-signed top, which relying parties already hold."""
    if certs and certs[-1].issuer == certs[-1].subject:
        return certs[:-1]
    return list(certs)


def is_ca_certificate(cert: x509.Certificate) -> bool:
    """Whether basicConstraints marks ``cert`` as a CA."""
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def signing_digest(key: PrivateKey) -> Digest | None:
    """A digest as strong as the key: SHA-384 for P-384, SHA-512 for P-521."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {384: "SHA384", 521: "SHA512"}.get(key.curve.key_size, "SHA256")  # type: ignore[return-value]
    return "SHA256"


async def load_signer(
    session: AsyncSession,
    ca_id: int,
    field: str,
    now: dt.datetime,
    *,
    crl_base_url: str | None = None,
) -> Signer:
    """The CA ``ca_id`` ready to sign, naming its CRL under ``crl_base_url``.

    Raises:
        ValidationError: at ``field``: no such CA, no key, revoked or on hold,
            expired, under a CA of ours that is revoked, on hold or expired,
            or stored data that no longer reads.
    """
    row = await session.get(CertificateAuthority, ca_id)
    if row is None:
        raise ValidationError.single(field, f"no certificate authority with id {ca_id}")
    if not row.privatekey:
        raise ValidationError.single(
            field, f"certificate authority {row.name!r} has no private key to sign with"
        )
    if row.revoked:
        state = (
            "is on hold"
            if row.revoked_reason == HOLD
            else "is revoked and signs no more"
        )
        raise ValidationError.single(
            field, f"certificate authority {row.name!r} {state}"
        )
    try:
        chain = load_chain(row.certificate)
        # Checked when it came in and authenticated by the store's encryption:
        # re-running RSA_check_key here would stall the loop on every signature.
        key = load_stored_private_key(row.privatekey)
        check_key_matches(chain[0], key)
    except PkiError as exc:
        raise ValidationError.single(
            field, f"certificate authority {row.name!r} cannot be used: {exc.message}"
        ) from None
    if chain[0].not_valid_after_utc <= now:
        raise ValidationError.single(
            field,
            f"certificate authority {row.name!r} expired on "
            f"{chain[0].not_valid_after_utc.isoformat()}",
        )
    above = ancestor_problem(row.id, await load_signers(session, [row.id]), now)
    if above is not None:
        raise ValidationError.single(
            field, f"certificate authority {row.name!r} cannot sign: {above}"
        )
    url = crl_url(crl_base_url, row.id) if crl_base_url else None
    return Signer(row.id, row.name, chain[0], key, chain, url)


async def find_issuer(
    session: AsyncSession, cert: x509.Certificate
) -> CertificateAuthority | None:
    """The CA of ours that issued ``cert``, if any."""
    from certd.pki.importing import issued_by

    rows = (
        await session.scalars(
            select(CertificateAuthority).order_by(CertificateAuthority.id)
        )
    ).all()
    for row in rows:
        try:
            candidate = load_chain(row.certificate)[0]
        except PkiError:
            continue
        if candidate != cert and issued_by(cert, candidate):
            return row
    return None


async def record_revocation(
    session: AsyncSession,
    *,
    authority_id: int,
    cert: x509.Certificate,
    subject: str,
    kind: str,
    reason: str | None,
    revoked_at: dt.datetime,
) -> None:
    """Add ``cert`` to its CA's revocations, or change the reason of its entry."""
    serial = serial_hex(cert.serial_number)
    existing = await session.scalar(
        select(Revocation).where(
            Revocation.authority_id == authority_id, Revocation.serial == serial
        )
    )
    if existing is not None:
        existing.reason = reason
        return
    session.add(
        Revocation(
            authority_id=authority_id,
            serial=serial,
            revoked_at=revoked_at,
            reason=reason,
            subject=subject,
            kind=kind,
            not_valid_after=cert.not_valid_after_utc,
        )
    )


async def remove_revocation(
    session: AsyncSession, authority_id: int, cert: x509.Certificate
) -> None:
    """Take ``cert`` off its CA's revocations (a lifted certificateHold)."""
    serial = serial_hex(cert.serial_number)
    existing = await session.scalar(
        select(Revocation).where(
            Revocation.authority_id == authority_id, Revocation.serial == serial
        )
    )
    if existing is not None:
        await session.delete(existing)


def crl_is_stale(crl_pem: str | None, now: dt.datetime) -> bool:
    """Whether a CRL is missing, unreadable, or past half its validity."""
    if not crl_pem:
        return True
    try:
        crl = x509.load_pem_x509_crl(crl_pem.encode())
    except ValueError:
        return True
    next_update = crl.next_update_utc
    if next_update is None:
        return True
    # Republishing at half-time leaves relying parties that cached the old
    # CRL a full half-period before it expires on them.
    return now >= crl.last_update_utc + (next_update - crl.last_update_utc) / 2


class CrlPublisher:
    """Builds and stores each CA's CRL; one at a time, so numbers never repeat.

    One at a time in this daemon by its lock, and among daemons sharing a
    PostgreSQL store by a lock on the CA's row, held from reading the last
    CRL number until the next one is committed.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.lock = asyncio.Lock()

    async def publish(
        self, ca_id: int, now: dt.datetime | None = None, *, if_stale: bool = False
    ) -> bool:
        """Sign a new CRL for ``ca_id`` with the next CRL number.

        With ``if_stale``, only if the stored CRL is still stale once the row
        is locked (another daemon may have just republished it). Returns
        False when no CRL was signed (no key, no cRLSign, not stale).
        """
        now = now or utcnow()
        async with self.lock, self.db.session() as session:
            # FOR UPDATE on PostgreSQL: a daemon sharing the store that
            # publishes at the same moment waits here, then reads our number.
            row = await session.get(CertificateAuthority, ca_id, with_for_update=True)
            if row is None or not row.privatekey:
                return False
            if if_stale and not crl_is_stale(row.crl, now):
                return False
            revocations = (
                await session.scalars(
                    select(Revocation)
                    .where(Revocation.authority_id == ca_id)
                    .order_by(Revocation.id)
                )
            ).all()
            entries = [
                # The CRL counts whole seconds; a revocation in this second
                # must not read as one in the future.
                (
                    int(r.serial, 16),
                    min(r.revoked_at, now).replace(microsecond=0),
                    r.reason,
                )
                for r in revocations
            ]
            try:
                cert = load_chain(row.certificate)[0]
                key = load_stored_private_key(row.privatekey)  # as in load_signer
                crl = build_crl(
                    cert,
                    key,
                    entries,
                    row.crl_number + 1,
                    now,
                    digest=signing_digest(key),
                )
            except (PkiError, ValidationError) as exc:
                log.warning("crl_not_published", authority=row.name, error=exc.message)
                row.crl = None
                return False
            row.crl_number += 1
            row.crl = crl.public_bytes(serialization.Encoding.PEM).decode()
            log.info(
                "crl_published",
                authority=row.name,
                crl_number=row.crl_number,
                revoked=len(entries),
            )
            return True

    async def refresh_stale(self, now: dt.datetime | None = None) -> int:
        """Republish every CRL that is missing or past half its validity."""
        now = now or utcnow()
        async with self.db.session() as session:
            rows = (
                await session.execute(
                    select(
                        CertificateAuthority.id,
                        CertificateAuthority.crl,
                    ).where(CertificateAuthority.privatekey.is_not(None))
                )
            ).all()
        count = 0
        for ca_id, crl_pem in rows:
            if crl_is_stale(crl_pem, now) and await self.publish(
                ca_id, now, if_stale=True
            ):
                count += 1
        return count


def crl_der(crl_pem: str) -> bytes:
    """A stored PEM CRL in DER, the form RFC 5280 4.2.1.13 asks HTTP to serve."""
    crl = x509.load_pem_x509_crl(crl_pem.encode())
    return crl.public_bytes(serialization.Encoding.DER)


def fingerprint(cert: x509.Certificate) -> bytes:
    """SHA-256 of a certificate, for telling certificates apart."""
    return cert.fingerprint(hashes.SHA256())


# --- signing a checked request ------------------------------------------------


def _field_of(parsed: Parsed, signer: Signer | None) -> str:
    # Below a CA whose path length is used up the signer is at fault; a path
    # length longer than the signer allows is the request's.
    child = parsed.extensions.BasicConstraints.path_length
    parent = _path_length(signer.cert) if signer is not None else None
    if parsed.extensions.is_ca and child is not None and parent:
        return "data.cert_extensions.BasicConstraints.path_length"
    return "data.signedby"


def sign_request(
    parsed: Parsed,
    public_key: PublicKey,
    now: dt.datetime,
    *,
    signer: Signer | None = None,
    self_key: PrivateKey | None = None,
) -> x509.Certificate:
    """Issue the certificate a checked request describes.

    With ``signer`` the CA signs it, naming its CRL when it has a ``crl_url``;
    otherwise ``self_key`` signs it as a self-signed root. Below a CA with a
    path length, a CA certificate that names none gets the parent's limit
    minus one, as the library's ``create_intermediate_ca`` does, so the limit
    shows in the certificate.

    Raises:
        ValidationError: at the request's field the library refuses.
    """
    extensions = parsed.extensions
    if signer is not None and extensions.is_ca:
        parent_limit = _path_length(signer.cert)
        bc = extensions.BasicConstraints
        if bc.path_length is None and parent_limit is not None and parent_limit > 0:
            extensions = extensions.model_copy(
                update={
                    "BasicConstraints": bc.model_copy(
                        update={"path_length": parent_limit - 1}
                    )
                }
            )
    issuer_key = signer.key if signer is not None else self_key
    assert issuer_key is not None
    digest = parsed.key.digest_algorithm or signing_digest(issuer_key)
    try:
        return build_certificate(
            subject_key_public=public_key,
            subject=build_name(parsed.subject),
            san=parsed.san,
            extensions=extensions,
            issuer_cert=signer.cert if signer is not None else None,
            issuer_key=issuer_key,
            digest=digest,
            lifetime_days=parsed.lifetime or 0,
            now=now,
            crl_url=signer.crl_url if signer is not None else None,
            # the name constraints of every CA above bind it too
            issuer_chain=signer.chain if signer is not None else (),
        )
    except ValidationError as exc:
        raise readdress(exc, "data") from None
    except PkiError as exc:
        raise pki_field_error(exc, _field_of(parsed, signer)) from None


def probe_key() -> PrivateKey:
    """A throwaway key for a trial signature that checks a request up front."""
    return ec.generate_private_key(ec.SECP256R1())


def _path_length(cert: x509.Certificate) -> int | None:
    try:
        return cert.extensions.get_extension_for_class(
            x509.BasicConstraints
        ).value.path_length
    except x509.ExtensionNotFound:
        return None
