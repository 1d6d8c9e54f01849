"""Directories other users may write to: never deployed into, files there kept as found."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from certd.deploy.files import Material, write_target
from certd.deploy.models import FileTarget
from certd.errors import DeployError
from tests.renewal.factory import make_chain

NOBODY, NOGROUP = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid


@pytest.fixture(scope="module")
def material() -> Material:
    chain = make_chain(["www.example.test"])
    return Material.load("www", chain.fullchain_pem, chain.key_pem)


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A directory every user may enter (pytest's own are root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="certd-shared-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def _owned(path: Path) -> tuple[int, int, int]:
    info = path.stat()
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


def _as_nobody(script: str) -> None:
    subprocess.run(
        ["/bin/sh", "-c", script],
        user=NOBODY,
        group=NOGROUP,
        extra_groups=[],
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )


def test_files_planted_by_another_user_in_a_sticky_directory_are_left_alone(
    reachable: Path, material: Material
) -> None:
    if os.geteuid() != 0:
        pytest.skip("planting files as another user needs root")
    shared = reachable / "tls"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    _as_nobody(
        f"cd {shared} && touch privkey.pem && chmod 600 privkey.pem "
        "&& touch cert.pem && chmod 666 cert.pem"
    )
    target = FileTarget(directory=str(shared), files=["cert", "privkey"])

    with pytest.raises(DeployError) as error:
        write_target(target, material)

    assert error.value.message == (
        f"{shared}: is writable by others (mode 1777): anyone could plant files "
        "there; refusing to deploy into it (chmod o-w it, or deploy elsewhere)"
    )
    assert _owned(shared / "privkey.pem") == (NOBODY, NOGROUP, 0o600)
    assert _owned(shared / "cert.pem") == (NOBODY, NOGROUP, 0o666)
    assert (shared / "privkey.pem").read_bytes() == b""
    assert sorted(p.name for p in shared.iterdir()) == ["cert.pem", "privkey.pem"]


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o703, 0o1733])
def test_a_directory_others_may_write_to_is_refused(
    tmp_path: Path, material: Material, mode: int
) -> None:
    shared = tmp_path / "tls"
    shared.mkdir()
    os.chmod(shared, mode)

    with pytest.raises(DeployError, match=f"is writable by others \\(mode {mode:04o}"):
        write_target(FileTarget(directory=str(shared)), material)

    assert list(shared.iterdir()) == []


def test_a_directory_reached_through_a_link_is_checked_where_it_is(
    tmp_path: Path, material: Material
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    (tmp_path / "link").symlink_to(shared)

    with pytest.raises(DeployError, match=r"link: is writable by others"):
        write_target(FileTarget(directory=str(tmp_path / "link")), material)

    assert list(shared.iterdir()) == []


def test_a_directory_inside_one_anyone_may_rename_in_is_refused(
    tmp_path: Path, material: Material
) -> None:
    open_parent = tmp_path / "open"
    (open_parent / "tls").mkdir(parents=True)
    os.chmod(open_parent, 0o777)

    with pytest.raises(DeployError) as existing:
        write_target(FileTarget(directory=str(open_parent / "tls")), material)
    with pytest.raises(DeployError) as created:
        write_target(FileTarget(directory=str(open_parent / "new")), material)

    assert existing.value.message == (
        f"{open_parent / 'tls'}: lies in {open_parent}, which anyone may write to "
        "(mode 0777), so anyone could put a directory of their own in its place; "
        "refusing to deploy there"
    )
    assert created.value.message.startswith(
        f"{open_parent / 'new'}: lies in {open_parent}, which anyone may write to"
    )
    assert list((open_parent / "tls").iterdir()) == []
    assert [p.name for p in open_parent.iterdir()] == ["tls"]


def test_a_sticky_directory_on_the_path_is_fine(
    tmp_path: Path, material: Material
) -> None:
    # /tmp is one: only an entry's owner may rename it there
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)

    written = write_target(
        FileTarget(directory=str(sticky / "tls"), files=["cert", "privkey"]),
        material,
    )

    assert written == {
        "cert": str(sticky / "tls" / "cert.pem"),
        "privkey": str(sticky / "tls" / "privkey.pem"),
    }
    assert stat.S_IMODE((sticky / "tls").stat().st_mode) == 0o755
    assert stat.S_IMODE((sticky / "tls" / "privkey.pem").stat().st_mode) == 0o600


def test_a_key_planted_by_the_directory_owner_is_not_given_to_them(
    reachable: Path, material: Material
) -> None:
    if os.geteuid() != 0:
        pytest.skip("planting files as another user needs root")
    # a service's own directory: its user may write there, not read the key
    # unless configured as the owner
    owned = reachable / "tls"
    owned.mkdir()
    os.chown(owned, NOBODY, NOGROUP)
    _as_nobody(
        f"cd {owned} && touch privkey.pem && chmod 640 privkey.pem "
        "&& touch cert.pem && chmod 664 cert.pem"
    )

    write_target(FileTarget(directory=str(owned), files=["cert", "privkey"]), material)

    assert _owned(owned / "privkey.pem") == (0, os.getegid(), 0o600)
    assert (owned / "privkey.pem").read_text() == material.key_pem
    # a certificate keeps its owner and group; never the group's write
    assert _owned(owned / "cert.pem") == (NOBODY, NOGROUP, 0o644)
