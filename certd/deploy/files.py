"""Writing a certificate's files so that a reader never sees half of one.

Each file is written to a temporary name in the same directory, synced,
renamed over the old one and the directory synced, so a reader sees the old
file or the new one and a power cut leaves one of the two. Key files are
created owner-only and get their final mode before any byte of the key is
written; no file is ever wider than its final mode, not even for a moment.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import secrets
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from certd.deploy.models import (
    DEFAULT_KEY_MODE,
    DEFAULT_MODE,
    KEY_FILES,
    MAX_KEY_MODE,
    FileTarget,
)
from certd.errors import DeployError, PkiError
from certd.pki.keys import load_stored_private_key


@dataclass(frozen=True)
class Material:
    """What a certificate's files are made of."""

    name: str
    certificates: tuple[x509.Certificate, ...]
    key_pem: str

    @classmethod
    def load(cls, name: str, fullchain_pem: str, key_pem: str) -> Material:
        """Split a stored chain (leaf first) and keep its key.

        Raises:
            PkiError: the chain cannot be read or holds no certificate.
        """
        try:
            certs = x509.load_pem_x509_certificates(fullchain_pem.encode())
        except ValueError as exc:
            raise PkiError(f"the chain of {name!r} cannot be read: {exc}") from None
        return cls(name, tuple(certs), key_pem)

    @staticmethod
    def _pem(certs: tuple[x509.Certificate, ...]) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)

    def render(self, kind: str, passphrase: str | None = None) -> bytes:
        """The bytes of one file kind."""
        if kind == "cert":
            return self._pem(self.certificates[:1])
        if kind == "chain":
            return self._pem(self.certificates[1:])
        if kind == "fullchain":
            return self._pem(self.certificates)
        if kind == "privkey":
            return self.key_pem.encode()
        if kind == "combined":
            return self._pem(self.certificates) + self.key_pem.encode()
        if kind == "pkcs12":
            encryption: serialization.KeySerializationEncryption = (
                serialization.BestAvailableEncryption(passphrase.encode())
                if passphrase
                else serialization.NoEncryption()
            )
            return pkcs12.serialize_key_and_certificates(
                self.name.encode(),
                load_stored_private_key(self.key_pem),  # type: ignore[arg-type]
                self.certificates[0],
                list(self.certificates[1:]) or None,
                encryption,
            )
        raise ValueError(f"unknown file kind {kind!r}")


# uid_t and gid_t are 32 bits; 2**32 - 1 is (uid_t) -1, "leave unchanged".
MAX_ID = 2**32 - 2


def _numeric_id(value: str) -> int:
    number = int(value)
    if number > MAX_ID:
        raise DeployError(value, f"a numeric id must be between 0 and {MAX_ID}")
    return number


def user_id(owner: str | None) -> int:
    """A user name or number as a uid; -1 for None.

    Raises:
        DeployError: there is no such user, or the number is out of range.
    """
    return _account_id(owner, lambda name: pwd.getpwnam(name).pw_uid, "user")


def group_id(group: str | None) -> int:
    """A group name or number as a gid; -1 for None.

    Raises:
        DeployError: there is no such group, or the number is out of range.
    """
    return _account_id(group, lambda name: grp.getgrnam(name).gr_gid, "group")


def _account_id(value: str | None, by_name: Callable[[str], int], what: str) -> int:
    if value is None:
        return -1
    # only ASCII digits make a number: "²" or "١٢" are names (str.isdigit
    # takes them, and int() reads the second as 12)
    if value.isascii() and value.isdigit():
        return _numeric_id(value)
    try:
        return by_name(value)
    except (KeyError, ValueError):
        # ValueError: a name the C library cannot take (an embedded NUL)
        raise DeployError(value, f"no such {what}") from None


@dataclass(frozen=True)
class Ownership:
    """Owner, group and mode a file gets; -1 leaves the owner or group as created."""

    uid: int
    gid: int
    mode: int


def _trusted_owners(configured_uid: int) -> frozenset[int]:
    """Users whose key file certd may replace keeping its group and mode."""
    owners = {0, os.geteuid()}
    if configured_uid != -1:
        owners.add(configured_uid)
    return frozenset(owners)


def ownership(
    path: Path, target: FileTarget, *, key: bool, dir_fd: int | None = None
) -> Ownership:
    """Configured values first, then those of the file being replaced, then defaults.

    A file holding the key takes nothing from a file owned by anyone but root,
    the daemon's user or the configured owner: whoever planted such a file
    would otherwise get to read the key, as its owner or through the group
    they chose. Modes taken over never let a key file be more than 0640, nor
    any file be writable by its group or others.

    With ``dir_fd``, ``path`` is looked up by its name in that open directory.

    Raises:
        DeployError: the path is a symbolic link or not a regular file, or the
            owner or group does not exist.
    """
    try:
        current: os.stat_result | None = os.lstat(
            path if dir_fd is None else path.name, dir_fd=dir_fd
        )
    except FileNotFoundError:
        current = None
    if current is not None and not stat.S_ISREG(current.st_mode):
        raise DeployError(
            str(path), "is not a regular file (certd replaces regular files only)"
        )
    uid = user_id(target.owner)
    gid = group_id(target.group)
    if key and current is not None and current.st_uid not in _trusted_owners(uid):
        current = None
    if uid == -1 and current is not None:
        uid = current.st_uid
    if gid == -1 and current is not None:
        gid = current.st_gid
    configured = target.key_mode if key else target.mode
    if configured is not None:
        mode = configured
    elif current is not None:
        # no set-id or sticky bits, and nobody but the owner may change what
        # services read: a mode carried over is never wider than that
        mode = stat.S_IMODE(current.st_mode) & 0o755
    else:
        mode = DEFAULT_KEY_MODE if key else DEFAULT_MODE
    if key:
        # whatever the old file allowed, a key is never writable by its
        # group nor readable by others
        mode &= MAX_KEY_MODE
    return Ownership(uid, gid, mode)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: Path, data: bytes, owner: Ownership, *, dir_fd: int | None = None
) -> None:
    """Replace ``path`` with ``data`` atomically, with the given owner and mode.

    With ``dir_fd``, the file is written by its name in that open directory,
    whatever ``path``'s directory names point to by now.

    Raises:
        DeployError: the file cannot be written (permissions, disk full, ...).
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.certd-tmp")
    if dir_fd is not None:
        temporary, final = Path(temporary.name), Path(path.name)
    else:
        final = path
    try:
        # Created owner-only, then given its owner and final mode while still
        # empty: at no point can anyone but the daemon read more than they
        # may read in the end.
        fd = os.open(
            temporary,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=dir_fd,
        )
    except OSError as exc:
        raise DeployError(str(path), f"cannot create a file: {exc.strerror}") from None
    try:
        try:
            if owner.uid != -1 or owner.gid != -1:
                os.fchown(fd, owner.uid, owner.gid)
            os.fchmod(fd, owner.mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temporary, final, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException as exc:
        # whatever went wrong (an id the kernel refuses, a cancelled thread),
        # no temporary file is left behind
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=dir_fd)
        if isinstance(exc, OSError):
            raise DeployError(str(path), f"cannot write: {exc.strerror}") from None
        if isinstance(exc, OverflowError):
            raise DeployError(
                str(path), f"owner {owner.uid} or group {owner.gid} is out of range"
            ) from None
        raise
    try:
        if dir_fd is None:
            _fsync_directory(path.parent)
        else:
            os.fsync(dir_fd)
    except OSError as exc:
        raise DeployError(str(path.parent), f"cannot sync: {exc.strerror}") from None


def within(directory: str | Path, roots: Sequence[Path]) -> bool:
    """Whether ``directory`` lies in one of ``roots``, symbolic links resolved in both."""
    real = Path(os.path.realpath(directory))
    for root in roots:
        top = Path(os.path.realpath(root))
        if real == top or top in real.parents:
            return True
    return False


def _real_path(fd: int, shown: Path) -> Path:
    """Where an open directory really is (its path with no symbolic link)."""
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        pass
    # no /proc: resolve the name, and trust it only if it is the open directory
    real = Path(os.path.realpath(shown))
    here, there = os.fstat(fd), os.stat(real)
    if (here.st_dev, here.st_ino) != (there.st_dev, there.st_ino):
        raise DeployError(str(shown), "was replaced while being deployed to")
    return real


def _open_directory(directory: Path, allowed: Sequence[Path]) -> int:
    """An open handle on ``directory``, refused when it really lies outside ``allowed``.

    Files are then written relative to this handle, so a symbolic link swapped
    in after the check cannot send them elsewhere.
    """
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise DeployError(str(directory), f"cannot open: {exc.strerror}") from None
    if not allowed:
        return fd
    try:
        real = _real_path(fd, directory)
        if not within(real, allowed):
            raise DeployError(
                str(directory),
                f"resolves to {real}, outside deploy.allowed_directories",
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


def _refuse_open_ancestors(directories: Iterable[Path], shown: Path) -> None:
    """Refuse a path through a directory anyone may rename entries in.

    There anyone could move the target away and put a directory of their own
    in its place. A sticky directory such as /tmp is fine: only an entry's
    owner may rename it there.
    """
    for directory in directories:
        try:
            info = os.stat(directory)
        except OSError as exc:
            raise DeployError(
                str(shown), f"cannot check {directory}: {exc.strerror}"
            ) from None
        if info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
            raise DeployError(
                str(shown),
                f"lies in {directory}, which anyone may write to (mode "
                f"{stat.S_IMODE(info.st_mode):04o}), so anyone could put a "
                "directory of their own in its place; refusing to deploy there",
            )


def _refuse_shared_directory(fd: int, shown: Path) -> None:
    """Refuse a directory that others may write to, and a path others may change.

    Whoever can create files in the directory could plant the files certd
    replaces, and their owner and mode are kept; a sticky bit does not help,
    as the planted files are the planter's own.
    """
    info = os.fstat(fd)
    if info.st_mode & stat.S_IWOTH:
        raise DeployError(
            str(shown),
            f"is writable by others (mode {stat.S_IMODE(info.st_mode):04o}): "
            "anyone could plant files there; refusing to deploy into it "
            "(chmod o-w it, or deploy elsewhere)",
        )
    _refuse_open_ancestors(_real_path(fd, shown).parents, shown)


def ensure_directory(target: FileTarget, allowed: Sequence[Path] = ()) -> Path:
    """The target directory, created (one level) if its parent exists.

    With ``allowed``, a directory is only created where it would really lie
    inside one of them (symbolic links in its parent resolved).

    Raises:
        DeployError: the parent is missing, the path is not a directory, it
            would lie outside ``allowed``, or in a directory anyone may write
            to that is not sticky.
    """
    directory = Path(target.directory)
    if directory.is_dir():
        return directory
    if directory.exists() or directory.is_symlink():
        raise DeployError(str(directory), "exists and is not a directory")
    if not directory.parent.is_dir():
        raise DeployError(
            str(directory), f"the parent directory {directory.parent} does not exist"
        )
    # the parent alone may lie outside, as for a new directory named as a root
    parent = _open_directory(directory.parent, ())
    try:
        real_parent = _real_path(parent, directory.parent)
        _refuse_open_ancestors((real_parent, *real_parent.parents), directory)
        if allowed:
            real = real_parent / directory.name
            if not within(real, allowed):
                raise DeployError(
                    str(directory),
                    f"would be created as {real}, outside deploy.allowed_directories",
                )
        os.mkdir(directory.name, 0o700, dir_fd=parent)
        fd = os.open(
            directory.name,
            os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
            dir_fd=parent,
        )
        try:
            # the daemon's umask is 077; a deploy directory is meant to be
            # read by the services that use the certificate
            os.fchmod(fd, 0o755)
            uid, gid = user_id(target.owner), group_id(target.group)
            if uid != -1 or gid != -1:
                os.fchown(fd, uid, gid)
        finally:
            os.close(fd)
    except OSError as exc:
        raise DeployError(str(directory), f"cannot create: {exc.strerror}") from None
    finally:
        os.close(parent)
    return directory


def write_target(
    target: FileTarget, material: Material, allowed: Sequence[Path] = ()
) -> dict[str, str]:
    """Write every file of one target; return the path of each kind written.

    With ``allowed`` (deploy.allowed_directories), the directory is checked
    again where it really is now, and every file is written into the very
    directory that was checked.

    Raises:
        DeployError: the directory lies outside ``allowed``, others may
            write to it (or rename it away), or a file could not be written
            (earlier ones stay written).
    """
    directory = ensure_directory(target, allowed)
    passphrase = (
        target.pkcs12_passphrase.get_secret_value()
        if target.pkcs12_passphrase
        else None
    )
    written: dict[str, str] = {}
    fd = _open_directory(directory, allowed)
    try:
        _refuse_shared_directory(fd, directory)
        for kind in target.files:
            path = directory / target.name_of(kind)
            data = material.render(kind, passphrase)
            owner = ownership(path, target, key=kind in KEY_FILES, dir_fd=fd)
            write_atomic(path, data, owner, dir_fd=fd)
            written[kind] = str(path)
    finally:
        os.close(fd)
    return written
