"""Writing certificate files: content, modes, owners, atomic replacement."""

from __future__ import annotations

import grp
import os
import pwd
import re
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs12

from certd.deploy.files import (
    Material,
    Ownership,
    ensure_directory,
    group_id,
    ownership,
    user_id,
    within,
    write_atomic,
    write_target,
)
from certd.deploy.models import DeploySpec, FileTarget, load_spec
from certd.errors import DeployError
from tests.renewal.factory import Chain, make_chain

NOBODY, NOGROUP = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
ALL_FILES = ["cert", "chain", "fullchain", "privkey", "combined", "pkcs12"]


@pytest.fixture(scope="module")
def chain() -> Chain:
    return make_chain(["www.example.test", "example.test"])


@pytest.fixture
def material(chain: Chain) -> Material:
    return Material.load("www", chain.fullchain_pem, chain.key_pem)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _owned(path: Path) -> tuple[int, int, int]:
    info = path.stat()
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


def test_write_target_contents(
    tmp_path: Path, chain: Chain, material: Material
) -> None:
    target = FileTarget.model_validate({"directory": str(tmp_path), "files": ALL_FILES})

    written = write_target(target, material)

    leaf_pem = chain.leaf.public_bytes(Encoding.PEM)
    ca_pem = chain.ca.public_bytes(Encoding.PEM)
    assert (tmp_path / "cert.pem").read_bytes() == leaf_pem
    assert (tmp_path / "chain.pem").read_bytes() == ca_pem
    assert (tmp_path / "fullchain.pem").read_bytes() == leaf_pem + ca_pem
    assert (tmp_path / "privkey.pem").read_text() == chain.key_pem
    assert (tmp_path / "combined.pem").read_bytes() == (
        leaf_pem + ca_pem + chain.key_pem.encode()
    )
    key, cert, extra = pkcs12.load_key_and_certificates(
        (tmp_path / "certificate.p12").read_bytes(), None
    )
    assert cert == chain.leaf
    assert extra == [chain.ca]
    assert key is not None
    assert written == {
        kind: str(tmp_path / name)
        for kind, name in [
            ("cert", "cert.pem"),
            ("chain", "chain.pem"),
            ("fullchain", "fullchain.pem"),
            ("privkey", "privkey.pem"),
            ("combined", "combined.pem"),
            ("pkcs12", "certificate.p12"),
        ]
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        Path(p).name for p in written.values()
    )


def test_write_target_default_modes(tmp_path: Path, material: Material) -> None:
    write_target(
        FileTarget.model_validate({"directory": str(tmp_path), "files": ALL_FILES}),
        material,
    )

    assert _mode(tmp_path / "cert.pem") == 0o644
    assert _mode(tmp_path / "fullchain.pem") == 0o644
    assert _mode(tmp_path / "privkey.pem") == 0o600
    assert _mode(tmp_path / "combined.pem") == 0o600
    assert _mode(tmp_path / "certificate.p12") == 0o600


def test_write_target_configured_modes_names_and_passphrase(
    tmp_path: Path, chain: Chain, material: Material
) -> None:
    target = FileTarget.model_validate(
        {
            "directory": str(tmp_path),
            "files": ["fullchain", "privkey", "pkcs12"],
            "file_names": {"fullchain": "server.crt", "privkey": "server.key"},
            "mode": "0640",
            "key_mode": "0640",
            "pkcs12_passphrase": "s3cret",
        }
    )

    write_target(target, material)

    assert _mode(tmp_path / "server.crt") == 0o640
    assert _mode(tmp_path / "server.key") == 0o640
    _, cert, _ = pkcs12.load_key_and_certificates(
        (tmp_path / "certificate.p12").read_bytes(), b"s3cret"
    )
    assert cert == chain.leaf
    with pytest.raises(ValueError):
        pkcs12.load_key_and_certificates(
            (tmp_path / "certificate.p12").read_bytes(), None
        )


def test_write_target_keeps_existing_owner_group_and_mode(
    tmp_path: Path, material: Material
) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")
    # as in /etc/nginx/ssl: root's directory, the key readable by the group
    cert, key = tmp_path / "cert.pem", tmp_path / "privkey.pem"
    cert.write_text("old")
    key.write_text("old")
    os.chown(cert, NOBODY, NOGROUP)
    os.chmod(cert, 0o604)
    os.chown(key, 0, NOGROUP)
    os.chmod(key, 0o646)  # readable by others: never kept for a key

    write_target(
        FileTarget(directory=str(tmp_path), files=["cert", "privkey"]), material
    )

    assert _owned(cert) == (NOBODY, NOGROUP, 0o604)
    assert _owned(key) == (0, NOGROUP, 0o640)
    assert key.read_text() == material.key_pem


def test_a_key_file_takes_nothing_from_one_another_user_owns(
    tmp_path: Path, material: Material
) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")
    key, combined = tmp_path / "privkey.pem", tmp_path / "combined.pem"
    for path in (key, combined):
        path.write_text("old")
        os.chown(path, NOBODY, NOGROUP)
        os.chmod(path, 0o640)

    write_target(
        FileTarget(directory=str(tmp_path), files=["privkey", "combined"]), material
    )

    # nobody chose the group and the mode too: neither is kept
    assert _owned(key) == (0, os.getegid(), 0o600)
    assert _owned(combined) == (0, os.getegid(), 0o600)


def test_a_key_file_owned_by_the_configured_owner_keeps_its_group(
    tmp_path: Path, material: Material
) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")
    key = tmp_path / "privkey.pem"
    key.write_text("old")
    os.chown(key, NOBODY, NOGROUP)
    os.chmod(key, 0o640)

    write_target(
        FileTarget(directory=str(tmp_path), files=["privkey"], owner="nobody"),
        material,
    )
    owned_by_nobody = _owned(key)
    write_target(
        FileTarget(directory=str(tmp_path), files=["privkey"], owner="daemon"),
        material,
    )

    assert owned_by_nobody == (NOBODY, NOGROUP, 0o640)
    assert _owned(key) == (1, os.getegid(), 0o600)


@pytest.mark.parametrize(
    ("old", "kind", "new"),
    [
        (0o666, "cert", 0o644),
        (0o4755, "fullchain", 0o755),
        (0o2640, "privkey", 0o640),
        (0o1600, "privkey", 0o600),
    ],
)
def test_a_mode_carried_over_is_never_writable_by_others_nor_set_id(
    tmp_path: Path, material: Material, old: int, kind: str, new: int
) -> None:
    target = FileTarget(directory=str(tmp_path), files=[kind])  # type: ignore[list-item]
    path = tmp_path / target.name_of(kind)
    path.write_text("old")
    os.chmod(path, old)

    write_target(target, material)

    assert _mode(path) == new


def test_write_target_configured_owner_wins(tmp_path: Path, material: Material) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")
    (tmp_path / "privkey.pem").write_text("old")
    os.chmod(tmp_path / "privkey.pem", 0o644)
    target = FileTarget(
        directory=str(tmp_path), files=["privkey"], owner="65534", group="nogroup"
    )

    write_target(target, material)

    info = (tmp_path / "privkey.pem").stat()
    assert (info.st_uid, info.st_gid) == (NOBODY, NOGROUP)
    assert _mode(tmp_path / "privkey.pem") == 0o640  # kept, less what others had


def test_write_atomic_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "file.pem"
    path.write_text("old")
    inode = path.stat().st_ino

    write_atomic(path, b"new", Ownership(-1, -1, 0o600))

    assert path.read_bytes() == b"new"
    assert path.stat().st_ino != inode  # renamed over, not rewritten in place
    assert [p.name for p in tmp_path.iterdir()] == ["file.pem"]


def test_write_atomic_failure_cleans_up(tmp_path: Path) -> None:
    # a directory where the file should go: the rename fails after the
    # temporary file was written
    (tmp_path / "file.pem").mkdir()

    with pytest.raises(DeployError, match=r"file\.pem: cannot write"):
        write_atomic(tmp_path / "file.pem", b"new", Ownership(-1, -1, 0o600))

    assert [p.name for p in tmp_path.iterdir()] == ["file.pem"]
    assert (tmp_path / "file.pem").is_dir()


def test_write_target_unknown_owner(tmp_path: Path, material: Material) -> None:
    (tmp_path / "cert.pem").write_text("old")
    target = FileTarget(directory=str(tmp_path), files=["cert"], owner="no-such-user")

    with pytest.raises(DeployError, match="no-such-user: no such user"):
        write_target(target, material)

    assert (tmp_path / "cert.pem").read_text() == "old"


def test_ownership_refuses_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "real.pem").write_text("x")
    (tmp_path / "cert.pem").symlink_to(tmp_path / "real.pem")

    with pytest.raises(DeployError, match="not a regular file"):
        ownership(tmp_path / "cert.pem", FileTarget(directory=str(tmp_path)), key=False)


def test_ensure_directory_creates_one_level(tmp_path: Path) -> None:
    target = FileTarget(directory=str(tmp_path / "live"))

    directory = ensure_directory(target)

    assert directory.is_dir()
    assert _mode(directory) == 0o755
    with pytest.raises(DeployError, match="parent directory"):
        ensure_directory(FileTarget(directory=str(tmp_path / "a" / "b")))


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ({"directory": "relative/dir"}, "absolute path"),
        ({"directory": "/tmp/x", "files": ["cert", "cert"]}, "listed once"),
        ({"directory": "/tmp/x", "file_names": {"cert": "../x"}}, "without '/'"),
        ({"directory": "/tmp/x", "key_mode": "0644"}, "readable by others"),
        ({"directory": "/tmp/x", "mode": "rw"}, "octal"),
        (
            {"directory": "/tmp/x", "file_names": {"privkey": "fullchain.pem"}},
            "privkey and fullchain would both be written to 'fullchain.pem'",
        ),
        (
            {
                "directory": "/tmp/x",
                "files": ["cert", "combined"],
                "file_names": {"combined": "cert.pem"},
            },
            "combined and cert would both be written to 'cert.pem'",
        ),
    ],
)
def test_file_target_rejects(target: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FileTarget.model_validate(target)


def test_deploy_spec_hides_the_passphrase() -> None:
    spec = DeploySpec.model_validate(
        {
            "targets": [{"directory": "/srv/tls", "pkcs12_passphrase": "pw"}],
            "hooks": [{"argv": ["/bin/true"]}],
        }
    )

    assert spec.stored()["targets"][0]["pkcs12_passphrase"] == "pw"
    public = spec.public()["targets"][0]
    assert "pkcs12_passphrase" not in public
    assert public["pkcs12_passphrase_set"] is True
    with pytest.raises(ValueError, match="absolute path"):
        DeploySpec.model_validate({"hooks": [{"argv": ["systemctl", "reload"]}]})
    with pytest.raises(ValueError, match="once"):
        DeploySpec.model_validate(
            {"targets": [{"directory": "/srv/a"}, {"directory": "/srv/a/"}]}
        )


def test_material_rejects_garbage() -> None:
    from certd.errors import PkiError

    with pytest.raises(PkiError, match="cannot be read"):
        Material.load("x", "not a certificate", "")
    assert isinstance(
        Material.load(
            "x", make_chain(["a.example.test"]).fullchain_pem, ""
        ).certificates[0],
        x509.Certificate,
    )


@pytest.mark.parametrize("key_mode", ["0670", "0660", "0740", "0700", "0641"])
def test_key_mode_is_at_most_owner_rw_group_r(key_mode: str) -> None:
    with pytest.raises(ValueError, match="at most 0640 for a key file"):
        FileTarget.model_validate({"directory": "/tmp/x", "key_mode": key_mode})


@pytest.mark.parametrize(("key_mode", "mode"), [("0640", 0o640), ("0400", 0o400)])
def test_key_mode_within_0640_is_taken(key_mode: str, mode: int) -> None:
    target = FileTarget.model_validate({"directory": "/tmp/x", "key_mode": key_mode})

    assert target.key_mode == mode


def test_key_file_never_keeps_group_write_from_the_file_it_replaces(
    tmp_path: Path, material: Material
) -> None:
    key = tmp_path / "privkey.pem"
    key.write_text("old")
    os.chmod(key, 0o770)

    write_target(FileTarget(directory=str(tmp_path), files=["privkey"]), material)

    assert _mode(key) == 0o640


def test_renamed_file_may_take_the_name_of_an_unlisted_default() -> None:
    target = FileTarget.model_validate(
        {
            "directory": "/tmp/x",
            "files": ["privkey", "cert"],
            "file_names": {"cert": "fullchain.pem"},
        }
    )

    assert [target.name_of(kind) for kind in target.files] == [
        "privkey.pem",
        "fullchain.pem",
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("owner", "99999999999999999"),
        ("owner", "4294967295"),
        ("group", "4294967295"),
        ("group", "18446744073709551615"),
    ],
)
def test_write_target_refuses_ids_out_of_range(
    tmp_path: Path, material: Material, field: str, value: str
) -> None:
    target = FileTarget.model_validate(
        {"directory": str(tmp_path), "files": ["cert"], field: value}
    )

    with pytest.raises(DeployError, match="between 0 and 4294967294"):
        write_target(target, material)

    assert list(tmp_path.iterdir()) == []


def test_write_atomic_leaves_no_temporary_when_the_owner_is_refused(
    tmp_path: Path,
) -> None:
    with pytest.raises(DeployError, match="out of range"):
        write_atomic(tmp_path / "file.pem", b"new", Ownership(2**40, -1, 0o600))

    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def allowed(tmp_path: Path) -> tuple[Path, Path]:
    """An allowed root and a directory outside it."""
    root, elsewhere = tmp_path / "allowed", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    return root, elsewhere


def test_within_resolves_symbolic_links(allowed: tuple[Path, Path]) -> None:
    root, elsewhere = allowed
    (root / "link").symlink_to(elsewhere)
    (root / "inside").mkdir()
    (root / "alias").symlink_to(root / "inside")
    (elsewhere / "to-root").symlink_to(root)

    assert within(root / "live", [root])
    assert within(root / "alias", [root])
    assert within(elsewhere / "to-root" / "live", [root])
    assert not within(root / "link", [root])
    assert not within(root / "link" / "live", [root])
    assert not within(root / ".." / "elsewhere", [root])
    # a root given through a link is the directory it points to
    assert within(root / "inside" / "x", [root / "alias"])


def test_write_target_refuses_a_directory_linked_outside(
    allowed: tuple[Path, Path], material: Material
) -> None:
    root, elsewhere = allowed
    (root / "link").symlink_to(elsewhere)
    target = FileTarget(directory=str(root / "link"))

    with pytest.raises(DeployError, match=r"outside deploy\.allowed_directories"):
        write_target(target, material, [root])

    assert list(elsewhere.iterdir()) == []


def test_write_target_does_not_create_a_directory_through_a_link_outside(
    allowed: tuple[Path, Path], material: Material
) -> None:
    root, elsewhere = allowed
    (root / "link").symlink_to(elsewhere)
    target = FileTarget(directory=str(root / "link" / "live"))

    with pytest.raises(DeployError, match=r"would be created as .*elsewhere/live"):
        write_target(target, material, [root])

    assert list(elsewhere.iterdir()) == []


def test_write_target_follows_a_link_that_stays_inside(
    allowed: tuple[Path, Path], material: Material
) -> None:
    root, _ = allowed
    (root / "real").mkdir()
    (root / "current").symlink_to(root / "real")
    target = FileTarget(directory=str(root / "current"), files=["cert"])

    written = write_target(target, material, [root])

    assert written == {"cert": str(root / "current" / "cert.pem")}
    assert [p.name for p in (root / "real").iterdir()] == ["cert.pem"]


def test_write_target_creates_the_root_itself(
    allowed: tuple[Path, Path], material: Material
) -> None:
    root, _ = allowed
    new_root = root.parent / "new-root"
    target = FileTarget(directory=str(new_root), files=["cert"])

    write_target(target, material, [new_root])

    assert [p.name for p in new_root.iterdir()] == ["cert.pem"]


@pytest.mark.parametrize("value", ["²", "١٢", "\uff11\uff12", "0x10", " 12", "-1"])
def test_only_ascii_digits_make_a_numeric_id(value: str) -> None:
    with pytest.raises(DeployError) as user:
        user_id(value)
    with pytest.raises(DeployError) as group:
        group_id(value)

    assert user.value.message == f"{value}: no such user"
    assert group.value.message == f"{value}: no such group"


def test_names_and_ascii_numbers_are_ids() -> None:
    assert [user_id("nobody"), user_id("65534"), user_id("007"), user_id(None)] == [
        NOBODY,
        65534,
        7,
        -1,
    ]
    assert [group_id("nogroup"), group_id("0")] == [NOGROUP, 0]


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        (444, "the number 444 is read in decimal, which is 0674 in octal"),
        (0o644, "the number 420 is read in decimal, which is 0644 in octal"),
        (True, "give the mode as octal text like '0640', a string"),
        (6.44, "give the mode as octal text like '0640', a string"),
        ("0o644", "not '0o644'"),
        ("6_44", "not '6_44'"),
        ("+644", "not '+644'"),
        ("0644 ", "not '0644 '"),
        ("00644", "not '00644'"),
        ("1644", "not '1644'"),
    ],
)
def test_a_mode_is_octal_text(mode: object, message: str) -> None:
    for field in ("mode", "key_mode"):
        with pytest.raises(ValueError, match=re.escape(message)):
            FileTarget.model_validate({"directory": "/tmp/x", field: mode})


def test_modes_are_stored_as_text_and_stored_numbers_still_load() -> None:
    spec = DeploySpec.model_validate(
        {"targets": [{"directory": "/srv/a", "mode": "644", "key_mode": "0440"}]}
    )
    # as stored before modes were kept as text
    old = load_spec(
        {"targets": [{"directory": "/srv/b", "mode": 420, "key_mode": 416}]}
    )

    assert (spec.targets[0].mode, spec.targets[0].key_mode) == (0o644, 0o440)
    stored = spec.stored()["targets"][0]
    assert (stored["mode"], stored["key_mode"]) == ("0644", "0440")
    assert load_spec(spec.stored()) == spec
    assert (old.targets[0].mode, old.targets[0].key_mode) == (0o644, 0o640)
    assert old.stored()["targets"][0]["mode"] == "0644"
    assert old.public()["targets"][0]["key_mode"] == "0640"
    # what the store holds is still held to the limits
    with pytest.raises(ValueError, match="at most 0640 for a key file, not 0644"):
        load_spec({"targets": [{"directory": "/srv/c", "key_mode": 420}]})
    with pytest.raises(ValueError, match="read in decimal"):
        DeploySpec.model_validate({"targets": [{"directory": "/srv/d", "mode": 420}]})


def test_the_schema_takes_modes_as_text_only() -> None:
    properties = DeploySpec.model_json_schema()["$defs"]["FileTarget"]["properties"]

    for field in ("mode", "key_mode"):
        assert properties[field]["anyOf"] == [
            {"type": "string", "pattern": "^0?[0-7]{3}$"},
            {"type": "null"},
        ]


@pytest.mark.parametrize("field", ["owner", "group"])
@pytest.mark.parametrize(
    ("value", "message"), [("", "at least 1 character"), ("a\0b", "cannot contain NUL")]
)
def test_owner_and_group_names_are_checked(
    field: str, value: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        FileTarget.model_validate({"directory": "/tmp/x", field: value})
