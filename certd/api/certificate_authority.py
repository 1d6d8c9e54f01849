"""``certificateauthority``: local CAs that sign certificates and publish CRLs.

A CA is a self-signed root (``CA_CREATE_INTERNAL``), an intermediate signed
by another CA of ours (``CA_CREATE_INTERMEDIATE``), or an imported CA
certificate with or without its key (``CA_CREATE_IMPORTED``). Each CA with a
key publishes a CRL, in the ``crl`` field and over HTTP without
authentication at ``/crl/by-id/<id>.crl`` (DER; the URL its certificates
name) and ``.pem``, and under its current name at ``/crl/<name>.crl`` and
``/crl/<name>.pem``.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from cryptography import x509
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from certd.api.certificate import CertificateEntry
from certd.api.crud import CRUDService
from certd.api.pki_import import match_certificate_key, read_chain, read_checked_key
from certd.api.pki_models import (
    CA_CREATE_TYPE_LABELS,
    HOLD,
    NAME_PATTERN,
    CACreate,
    CAEntry,
    CASignCSR,
    CAUpdate,
    check_revocation_change,
    check_trusted_store,
)
from certd.api.pki_params import (
    Parsed,
    apply_profile,
    given,
    merge_extensions,
    parse_request,
    pick_profile,
)
from certd.api.pki_store import (
    CrlPublisher,
    Signer,
    chain_pem,
    crl_der,
    crl_is_stale,
    find_issuer,
    is_ca_certificate,
    issuer_label,
    load_chain,
    load_signer,
    probe_key,
    record_revocation,
    remove_revocation,
    sign_request,
)
from certd.api.registry import api_method
from certd.errors import (
    ConflictError,
    FieldError,
    NotFoundError,
    PkiError,
    ValidationCollector,
    ValidationError,
)
from certd.pki.constraints import check_issuers_valid, check_path_lengths
from certd.pki.crl import revocation_reason_choices
from certd.pki.extensions import crl_paths
from certd.pki.inspect import FIELDS, describe_certificate
from certd.pki.keys import private_key_to_pem
from certd.pki.profiles import ca_profiles, certificate_profiles
from certd.pki.sign import check_csr_names, sign_csr
from certd.store.models import (
    Certificate,
    CertificateAuthority,
    Event,
    Revocation,
    utcnow,
)
from certd.workers import generate_key

log = structlog.get_logger(__name__)

DEFAULT_PROFILES = {
    "CA_CREATE_INTERNAL": "Root CA",
    "CA_CREATE_INTERMEDIATE": "Intermediate CA",
}
# How often stale CRLs are looked for; they are republished at half-time.
CRL_CHECK_SECONDS = 3600
# Every top-level field of an entry: the certificate's description and what
# _entry adds. CAEntry takes extra fields, so without this a misspelt filter
# over no CA would match nothing instead of being refused.
CA_ENTRY_FIELDS = frozenset(
    {
        *FIELDS,
        "id",
        "name",
        "cert_type",
        "create_type",
        "certificate",
        "has_privatekey",
        "signedby",
        "issuer",
        "add_to_trusted_store",
        "revoked",
        "revoked_at",
        "revoked_reason",
        "signed_certificates",
        "signed_authorities",
        "revoked_certificates",
        "crl",
        "crl_number",
        "crl_url",
        "crl_pem_url",
        "created_at",
    }
)


@dataclass(frozen=True)
class NewPlan:
    """A checked root or intermediate: the request and the parent, if any."""

    parsed: Parsed
    signer: Signer | None


@dataclass(frozen=True)
class ImportPlan:
    """A checked CA import: its chain leaf first, its key, our CA above it."""

    chain: list[x509.Certificate]
    key_pem: str | None
    parent_id: int | None


class CertificateAuthorityService(CRUDService):
    namespace = "certificateauthority"
    kind = "certificate authority"
    Entry = CAEntry
    entry_fields = CA_ENTRY_FIELDS

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self.crls = CrlPublisher(app.db)
        self._refresher: asyncio.Task[None] | None = None
        for method in ("GET", "HEAD"):
            app.extra_routes.append((method, "/crl/{filename}", self.serve_crl))
            app.extra_routes.append(
                (method, "/crl/by-id/{filename}", self.serve_crl_by_id)
            )

    async def on_start(self) -> None:
        await self.crls.refresh_stale()
        self._refresher = asyncio.create_task(self._refresh_loop(), name="crl-refresh")

    async def on_stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(CRL_CHECK_SECONDS)
            try:
                await self.crls.refresh_stale()
            except Exception:
                log.exception("crl_refresh_failed")

    # --- results ------------------------------------------------------------

    async def entries(self) -> list[dict[str, Any]]:
        return await self._entries(None)

    async def get_entry(self, id: int) -> dict[str, Any]:
        found = await self._entries(id)
        if not found:
            raise NotFoundError(self.kind, id)
        return found[0]

    async def _entries(self, only: int | None) -> list[dict[str, Any]]:
        query = select(CertificateAuthority).order_by(CertificateAuthority.id)
        if only is not None:
            query = query.where(CertificateAuthority.id == only)

        def read(session: Session) -> list[dict[str, Any]]:
            rows = session.scalars(query).all()
            names = {
                ca_id: name
                for ca_id, name in session.execute(
                    select(CertificateAuthority.id, CertificateAuthority.name)
                )
            }
            certs = _counts(session, Certificate.signedby_id)
            cas = _counts(session, CertificateAuthority.signedby_id)
            revocations = session.scalars(
                select(Revocation).order_by(Revocation.id)
            ).all()
            return [self._entry(row, names, certs, cas, revocations) for row in rows]

        return await self.app.db.read_objects(read)

    def _entry(
        self,
        row: CertificateAuthority,
        names: dict[int, str],
        certs: dict[int, int],
        cas: dict[int, int],
        revocations: Any,
    ) -> dict[str, Any]:
        described = describe_certificate(row.certificate)
        der_url, pem_url = crl_paths(row.id)
        return {
            **described,
            "id": row.id,
            "name": row.name,
            "cert_type": "CA",
            "create_type": row.create_type,
            "certificate": row.certificate,
            "has_privatekey": bool(row.privatekey),
            "signedby": row.signedby_id,
            "issuer": issuer_label(described, names.get(row.signedby_id or 0)),
            "add_to_trusted_store": False,
            "revoked": row.revoked,
            "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
            "revoked_reason": row.revoked_reason,
            "signed_certificates": certs.get(row.id, 0),
            "signed_authorities": cas.get(row.id, 0),
            "revoked_certificates": [
                {
                    "serial": r.serial,
                    "name": r.subject,
                    "kind": r.kind,
                    "revoked_at": r.revoked_at.isoformat(),
                    "reason": r.reason,
                }
                for r in revocations
                if r.authority_id == row.id
            ],
            "crl": row.crl,
            "crl_number": row.crl_number,
            "crl_url": der_url,
            "crl_pem_url": pem_url,
            "created_at": row.created_at.isoformat(),
        }

    # --- create -------------------------------------------------------------

    async def check_create(self, data: CACreate) -> NewPlan | ImportPlan:
        """Check a CA request; returns what create needs to act on it."""
        errors = ValidationCollector()
        if not NAME_PATTERN.match(data.name):
            errors.add("data.name", "use only letters, digits, '_' and '-'")
        async with self.app.db.session() as session:
            if await session.scalar(
                select(CertificateAuthority.id).where(
                    CertificateAuthority.name == data.name
                )
            ):
                errors.add(
                    "data.name",
                    f"a certificate authority named {data.name!r} already exists",
                )
        check_trusted_store(errors, data.add_to_trusted_store)
        if data.create_type == "CA_CREATE_INTERMEDIATE" and data.signedby is None:
            errors.add(
                "data.signedby", "required for CA_CREATE_INTERMEDIATE: the parent CA id"
            )
        if data.create_type == "CA_CREATE_IMPORTED" and not data.certificate:
            errors.add("data.certificate", "required for CA_CREATE_IMPORTED")
        errors.check()
        if data.create_type == "CA_CREATE_IMPORTED":
            return await self._plan_import(data)
        return await self._plan_new(data)

    async def _plan_new(self, data: CACreate) -> NewPlan:
        values = given(data.model_dump(exclude_unset=True))
        name = (
            data.profile
            if "profile" in data.model_fields_set
            else DEFAULT_PROFILES[data.create_type]
        )
        profile = pick_profile(name, ca_profiles(), "data.profile")
        parsed = parse_request(apply_profile(values, profile))
        if not parsed.extensions.is_ca:
            raise ValidationError.single(
                "data.cert_extensions.BasicConstraints",
                "a CA needs BasicConstraints enabled with ca true (RFC 5280 4.2.1.9)",
            )
        now = utcnow()
        signer = None
        if data.create_type == "CA_CREATE_INTERMEDIATE":
            assert data.signedby is not None
            async with self.app.db.session() as session:
                signer = await load_signer(
                    session,
                    data.signedby,
                    "data.signedby",
                    now,
                    crl_base_url=self.app.config.pki.crl_base_url,
                )
            # A trial signature checks path length and validity against the parent.
            sign_request(parsed, probe_key().public_key(), now, signer=signer)
        else:
            probe = probe_key()
            sign_request(parsed, probe.public_key(), now, self_key=probe)
        return NewPlan(parsed, signer)

    async def _plan_import(self, data: CACreate) -> ImportPlan:
        chain = read_chain(data.certificate or "")
        if not is_ca_certificate(chain[0]):
            raise ValidationError.single(
                "data.certificate",
                "not a CA certificate (BasicConstraints ca is not true); import it "
                "with certificate.create (CERTIFICATE_CREATE_IMPORTED)",
            )
        key_pem = None
        if data.privatekey is not None:
            key = await read_checked_key(
                data.privatekey.get_secret_value(), data.passphrase
            )
            match_certificate_key(chain[0], key)
            key_pem = private_key_to_pem(key)
        async with self.app.db.session() as session:
            parent = await find_issuer(session, chain[0])
        try:
            check_path_lengths(chain)
            if parent is not None:
                # Our CA and those above it, as stored, bound the new one too.
                check_path_lengths([chain[0], *load_chain(parent.certificate)])
        except PkiError as exc:
            raise ValidationError.single("data.certificate", exc.message) from None
        return ImportPlan(chain, key_pem, parent.id if parent else None)

    @api_method(secret_params=("data.privatekey", "data.passphrase"))
    async def create(self, data: CACreate) -> CAEntry:
        """Create a root or intermediate CA, or import one."""
        plan = await self.check_create(data)
        if isinstance(plan, ImportPlan):
            row = CertificateAuthority(
                name=data.name,
                create_type=data.create_type,
                certificate=chain_pem(plan.chain),
                privatekey=plan.key_pem,
                signedby_id=plan.parent_id,
            )
        else:
            parsed, signer = plan.parsed, plan.signer
            key_pem, key = await self.app.workers.run(
                generate_key, parsed.key.model_dump()
            )
            now = utcnow()
            if signer is None:
                cert = sign_request(parsed, key.public_key(), now, self_key=key)
                chain = [cert]
            else:
                cert = sign_request(parsed, key.public_key(), now, signer=signer)
                chain = [cert, *signer.chain]
            row = CertificateAuthority(
                name=data.name,
                create_type=data.create_type,
                certificate=chain_pem(chain),
                privatekey=key_pem,
                signedby_id=signer.id if signer else None,
            )
        new_id = await self._insert(row)
        if row.privatekey:
            await self.crls.publish(new_id)
        return await self.get_entry(new_id)  # type: ignore[return-value]

    async def _insert(self, row: CertificateAuthority) -> int:
        async with self.app.db.session() as session:
            if await session.scalar(
                select(CertificateAuthority.id).where(
                    CertificateAuthority.name == row.name
                )
            ):
                raise ValidationError.single(
                    "data.name",
                    f"a certificate authority named {row.name!r} already exists",
                )
            session.add(row)
            await session.flush()
            log.info(
                "authority_stored", authority=row.name, create_type=row.create_type
            )
            return row.id

    # --- update and delete ----------------------------------------------------

    @api_method()
    async def update(self, id: int, data: CAUpdate) -> CAEntry:
        """Rename a CA, or revoke it in its parent's CRL."""
        parent_changed: int | None = None
        event: Event | None = None
        async with self.app.db.session() as session:
            row = await session.get(CertificateAuthority, id)
            if row is None:
                raise NotFoundError(self.kind, id)
            errors = ValidationCollector()
            if data.name is not None and data.name != row.name:
                if not NAME_PATTERN.match(data.name):
                    errors.add("data.name", "use only letters, digits, '_' and '-'")
                elif await session.scalar(
                    select(CertificateAuthority.id).where(
                        CertificateAuthority.name == data.name
                    )
                ):
                    errors.add(
                        "data.name",
                        f"a certificate authority named {data.name!r} already exists",
                    )
            check_trusted_store(errors, data.add_to_trusted_store)
            check_revocation_change(
                errors,
                revoked=data.revoked,
                reason=data.revoked_reason,
                now_revoked=row.revoked,
                now_reason=row.revoked_reason,
            )
            errors.check()
            if data.name is not None:
                row.name = data.name
            if data.revoked is not None:
                parent_changed, event = await self._apply_revocation(session, row, data)
        if event is not None:
            self.app.events.deliver(event)
        if parent_changed is not None:
            await self.crls.publish(parent_changed)
        if data.revoked is not None:
            # the certificates of the CAs below it are replanned as well
            await self.app.renewal.authority_changed(id)
        return await self.get_entry(id)  # type: ignore[return-value]

    async def _apply_revocation(
        self, session: Any, row: CertificateAuthority, data: CAUpdate
    ) -> tuple[int | None, Event | None]:
        """Record or lift the CA's revocation and stage its event.

        Returns the parent whose CRL changes and the event to deliver once
        the transaction has committed; neither when nothing changed.
        """
        parent: CertificateAuthority | None = (
            await session.get(CertificateAuthority, row.signedby_id)
            if row.signedby_id
            else None
        )
        # Only a parent of ours with a key can list the CA in a CRL.
        lister = parent if parent is not None and parent.privatekey else None
        try:
            leaf = load_chain(row.certificate)[0]
        except PkiError as exc:
            raise ValidationError.single(
                "data.revoked", f"the stored certificate cannot be read: {exc.message}"
            ) from None
        if data.revoked:
            if row.revoked and row.revoked_reason == data.revoked_reason:
                return None, None
            now = utcnow()
            if lister is not None:
                await record_revocation(
                    session,
                    authority_id=lister.id,
                    cert=leaf,
                    subject=row.name,
                    kind="authority",
                    reason=data.revoked_reason,
                    revoked_at=row.revoked_at or now,
                )
            row.revoked = True
            row.revoked_at = row.revoked_at or now
            row.revoked_reason = data.revoked_reason
            log.info(
                "authority_revoked",
                authority=row.name,
                reason=data.revoked_reason,
                listed_by=lister.name if lister is not None else None,
            )
            event = self._revoked_event(session, row)
        else:
            if not row.revoked:
                return None, None
            if lister is not None:
                await remove_revocation(session, lister.id, leaf)
            row.revoked = False
            row.revoked_at = None
            row.revoked_reason = None
            log.info("authority_hold_lifted", authority=row.name)
            event = self.app.events.stage(
                session,
                "authority.released",
                f"the hold on CA {row.name} was lifted: it and the CAs below it "
                "can sign again",
                subject=row.name,
                data={"ca_id": row.id, "name": row.name},
            )
        return (lister.id if lister is not None else None), event

    def _revoked_event(self, session: Any, row: CertificateAuthority) -> Event:
        # The CAs below it sign nothing of use either (RFC 5280 6.1.3).
        if row.revoked_reason == HOLD:
            message = (
                f"CA {row.name} was put on hold: it and the CAs below it sign "
                "nothing until the hold is lifted"
            )
        else:
            message = (
                f"CA {row.name} was revoked ({row.revoked_reason or 'unspecified'}):"
                " it and the CAs below it sign no more"
            )
        return self.app.events.stage(  # type: ignore[no-any-return]
            session,
            "authority.revoked",
            message,
            subject=row.name,
            data={"reason": row.revoked_reason, "ca_id": row.id, "name": row.name},
        )

    @api_method()
    async def delete(self, id: int, force: bool = False) -> bool:
        """Delete a CA; refused while it has signed certificates or CAs, unless forced."""
        async with self.app.db.session() as session:
            row = await session.get(CertificateAuthority, id)
            if row is None:
                raise NotFoundError(self.kind, id)
            certs = (
                await session.scalars(
                    select(Certificate).where(Certificate.signedby_id == id)
                )
            ).all()
            cas = (
                await session.scalars(
                    select(CertificateAuthority).where(
                        CertificateAuthority.signedby_id == id
                    )
                )
            ).all()
            if (certs or cas) and not force:
                listed = [f"certificate {c.name!r}" for c in certs] + [
                    f"certificate authority {c.name!r}" for c in cas
                ]
                raise ConflictError(
                    f"certificate authority {row.name!r} signed "
                    f"{', '.join(listed)}; delete those first or pass force=true"
                )
            # Forced: what it signed stays, no longer linked to a CA of ours.
            for child in [*certs, *cas]:
                child.signedby_id = None
            await session.flush()
            await session.delete(row)
        log.info(
            "authority_deleted", authority=row.name, orphaned=len(certs) + len(cas)
        )
        await self.app.renewal.replan_certificates([c.id for c in certs])
        return True

    # --- signing a CSR ------------------------------------------------------

    @api_method()
    async def ca_sign_csr(self, data: CASignCSR) -> CertificateEntry:
        """Sign a stored CSR with a CA; the result is a new certificate."""
        errors = ValidationCollector()
        if not NAME_PATTERN.match(data.name):
            errors.add("data.name", "use only letters, digits, '_' and '-'")
        now = utcnow()
        async with self.app.db.session() as session:
            if await session.scalar(
                select(Certificate.id).where(Certificate.name == data.name)
            ):
                errors.add(
                    "data.name", f"a certificate named {data.name!r} already exists"
                )
            csr_row = await session.get(Certificate, data.csr_cert_id)
            if csr_row is None or csr_row.cert_type != "CSR":
                errors.add("data.csr_cert_id", f"no CSR with id {data.csr_cert_id}")
            errors.check()
            signer = await load_signer(
                session,
                data.ca_id,
                "data.ca_id",
                now,
                crl_base_url=self.app.config.pki.crl_base_url,
            )
        assert csr_row is not None
        try:
            csr = x509.load_pem_x509_csr((csr_row.csr or "").encode())
        except ValueError as exc:
            raise ValidationError.single(
                "data.csr_cert_id", f"the stored CSR cannot be read: {exc}"
            ) from None
        # A CSR stored before import checked its names is refused here too.
        check_csr_names(csr, "data.csr_cert_id")
        try:
            check_issuers_valid(signer.chain, now)
        except PkiError as exc:
            raise ValidationError.single("data.ca_id", exc.message) from None

        profiles = certificate_profiles()
        profile_name = data.profile or _default_leaf_profile(csr)
        profile = pick_profile(profile_name, profiles, "data.profile")
        values = given(
            data.model_dump(
                exclude_unset=True,
                include={"cert_extensions", "lifetime", "digest_algorithm"},
            )
        )
        merged = {
            "lifetime": values.get("lifetime", profile.get("lifetime")),
            "digest_algorithm": values.get(
                "digest_algorithm", profile.get("digest_algorithm")
            ),
            "cert_extensions": merge_extensions(
                profile.get("cert_extensions") or {},
                values.get("cert_extensions") or {},
            ),
        }
        # The subject and SANs are the CSR's own.
        parsed = parse_request(merged, require_name=False)
        if parsed.extensions.is_ca:
            raise ValidationError.single(
                "data.cert_extensions.BasicConstraints.ca",
                "a CA certificate is made with certificateauthority.create",
            )
        try:
            cert = sign_csr(
                csr,
                signer.cert,
                signer.key,
                parsed.extensions,
                parsed.lifetime or 0,
                parsed.key.digest_algorithm,
                now,
                crl_url=signer.crl_url,
                ca_chain=signer.chain,
            )
        except ValidationError as exc:
            raise _csr_errors(exc) from None
        except PkiError as exc:
            raise ValidationError.single("data.csr_cert_id", exc.message) from None

        async with self.app.db.session() as session:
            row = Certificate(
                name=data.name,
                cert_type="CERTIFICATE",
                create_type="CA_SIGN_CSR",
                certificate=chain_pem([cert, *signer.chain]),
                privatekey=csr_row.privatekey,
                csr=csr_row.csr,
                csr_id=csr_row.id,
                signedby_id=signer.id,
            )
            session.add(row)
            await session.flush()
            new_id = row.id
        log.info(
            "csr_signed",
            certificate=data.name,
            authority=signer.name,
            serial=f"{cert.serial_number:X}",
        )
        return await self.app.services["certificate"].get_entry(new_id)  # type: ignore[no-any-return]

    # --- choices --------------------------------------------------------------

    @api_method(readonly=True)
    async def profiles(self) -> dict[str, dict[str, Any]]:
        """Presets for CAs: key, digest, lifetime and extensions."""
        return ca_profiles()

    @api_method(readonly=True)
    async def create_type_choices(self) -> dict[str, str]:
        """The ways to create a CA, with a label."""
        return dict(CA_CREATE_TYPE_LABELS)

    @api_method(readonly=True)
    async def crl_reason_choices(self) -> dict[str, str]:
        """RFC 5280 5.3.1 revocation reasons for revoked_reason, with a label."""
        return revocation_reason_choices()

    # --- CRL over HTTP --------------------------------------------------------

    async def serve_crl(self, request: web.Request) -> web.StreamResponse:
        """``GET /crl/<name>.crl`` (DER) or ``.pem``; no authentication."""
        name, _, suffix = request.match_info["filename"].rpartition(".")
        if not NAME_PATTERN.match(name):
            raise web.HTTPNotFound(text="no such CRL\n")
        return await self._serve_crl(CertificateAuthority.name == name, suffix)

    async def serve_crl_by_id(self, request: web.Request) -> web.StreamResponse:
        """``GET /crl/by-id/<id>.crl`` (DER) or ``.pem``; no authentication."""
        ca_id, _, suffix = request.match_info["filename"].rpartition(".")
        # One URL per CRL: ASCII digits without leading zeros ("02" is not 2).
        digits = ca_id.isascii() and ca_id.isdigit() and len(ca_id) <= 18
        if not digits or ca_id != str(int(ca_id)):
            raise web.HTTPNotFound(text="no such CRL\n")
        return await self._serve_crl(CertificateAuthority.id == int(ca_id), suffix)

    async def _serve_crl(self, which: Any, suffix: str) -> web.StreamResponse:
        if suffix not in ("crl", "pem"):
            raise web.HTTPNotFound(text="no such CRL\n")
        async with self.app.db.session() as session:
            row = await session.scalar(select(CertificateAuthority).where(which))
        if row is None or not row.privatekey:
            raise web.HTTPNotFound(text="no such CRL\n")
        crl_pem = row.crl
        if crl_is_stale(crl_pem, utcnow()):
            await self.crls.publish(row.id)
            async with self.app.db.session() as session:
                crl_pem = (await session.get(CertificateAuthority, row.id)).crl  # type: ignore[union-attr]
        if not crl_pem:
            raise web.HTTPNotFound(text="this CA cannot sign a CRL\n")
        if suffix == "pem":
            return web.Response(
                text=crl_pem, content_type="application/x-pem-file", charset="ascii"
            )
        # RFC 2585 3: DER with the media type application/pkix-crl.
        return web.Response(body=crl_der(crl_pem), content_type="application/pkix-crl")


def _counts(session: Session, column: Any) -> dict[int, int]:
    rows = session.execute(
        select(column, func.count()).where(column.is_not(None)).group_by(column)
    )
    return {key: value for key, value in rows}


# Fields of the library's errors that stand for the CSR's names and subject.
_CSR_FIELDS = ("san", "common", "email")


def _csr_errors(exc: ValidationError) -> ValidationError:
    # The subject and SANs come from the stored CSR: the CSR is at fault.
    return ValidationError(
        [
            FieldError(
                "data.csr_cert_id"
                if e.field.split(".")[0] in _CSR_FIELDS
                else f"data.{e.field}",
                e.message,
                e.errno,
            )
            for e in exc.errors
        ]
    )


def _default_leaf_profile(csr: x509.CertificateSigningRequest) -> str:
    from cryptography.hazmat.primitives.asymmetric import rsa

    if isinstance(csr.public_key(), rsa.RSAPublicKey):
        return "HTTPS RSA Certificate"
    return "HTTPS ECC Certificate"
