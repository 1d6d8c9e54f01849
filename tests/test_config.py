from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from certd.config import Config, load_config
from certd.errors import ValidationError

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_are_safe(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    config = load_config(None)
    assert config.server.http_host == "127.0.0.1"
    assert config.server.socket_mode == 0o600
    assert config.server.unix_socket is not None
    assert config.store.url().startswith("sqlite+aiosqlite:///")
    assert config.store.url().endswith("/certd.db")


def test_systemd_directories_are_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/certd-test")
    monkeypatch.setenv("RUNTIME_DIRECTORY", "/run/certd-test")
    config = Config()
    assert config.store.state_dir == Path("/var/lib/certd-test")
    assert config.server.unix_socket == Path("/run/certd-test/certd.sock")


def test_example_file_documents_the_defaults() -> None:
    example = tomllib.loads((ROOT / "config.example.toml").read_text())
    parsed = Config.model_validate(example)
    defaults = Config()
    for section, values in example.items():
        for key in values:
            assert getattr(getattr(parsed, section), key) == getattr(
                getattr(defaults, section), key
            ), f"{section}.{key}"
    # Every key of every section is named in the example, set or commented out.
    text = (ROOT / "config.example.toml").read_text()
    for section_name, section in Config.model_fields.items():
        for key in section.annotation.model_fields:  # type: ignore[union-attr]
            assert f"{key} =" in text, f"{section_name}.{key} is not documented"


def test_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[server]\nhttp_port = "x"\nsocket_mode = "0644"\n[nosuch]\na = 1\n'
    )
    with pytest.raises(ValidationError) as caught:
        load_config(path)
    fields = sorted(e.field for e in caught.value.errors)
    assert fields == ["nosuch", "server.http_port", "server.socket_mode"]
    path.write_text("[server\n")
    with pytest.raises(ValidationError) as caught:
        load_config(path)
    assert "not valid TOML" in caught.value.message
    with pytest.raises(ValidationError) as caught:
        load_config(tmp_path / "missing.toml")
    assert "cannot read" in caught.value.message


def test_a_misspelt_key_is_told_the_closest_one(tmp_path: Path) -> None:
    path = tmp_path / "typo.toml"
    path.write_text(
        "[renewal]\nrenew_dayz = 20\n"
        "[[events.webhooks]]\nurl = 'http://127.0.0.1:9/h'\nretrys = 2\n"
        "[serverr]\nx = 1\n"
        "[store]\nzzz = 1\n"
    )
    with pytest.raises(ValidationError) as caught:
        load_config(path)
    told = {e.field: e.message for e in caught.value.errors}
    assert told == {
        "renewal.renew_dayz": "unknown key; did you mean 'renew_days'?",
        "events.webhooks.0.retrys": "unknown key; did you mean 'retries'?",
        "serverr": "unknown key; did you mean 'server'?",
        "store.zzz": "unknown key",
    }


@pytest.mark.parametrize(
    ("value", "told"),
    [
        ("", "expected an IP address, IPv4:PORT or [IPv6]:PORT"),
        ("not a host::", "expected an IP address, IPv4:PORT or [IPv6]:PORT"),
        ("ns1.example.test", "expected an IP address, IPv4:PORT or [IPv6]:PORT"),
        ("[::1", "expected an IP address, IPv4:PORT or [IPv6]:PORT"),
        ("127.0.0.1:99999", "the port must be a number from 1 to 65535"),
        ("127.0.0.1:0", "the port must be a number from 1 to 65535"),
        ("127.0.0.1:abc", "the port must be a number from 1 to 65535"),
        ("[::1]:", "the port must be a number from 1 to 65535"),
        ("0.0.0.0", "not the address of one server"),
        ("[ff02::1]:53", "not the address of one server"),
    ],
)
def test_a_resolver_must_be_an_address_and_a_port(
    tmp_path: Path, value: str, told: str
) -> None:
    path = tmp_path / "certd.toml"
    path.write_text(f'[dns]\nresolvers = ["127.0.0.1", "{value}"]\n')
    with pytest.raises(ValidationError) as caught:
        load_config(path)
    assert [e.field for e in caught.value.errors] == ["dns.resolvers"]
    assert caught.value.errors[0].message == f"{value!r}: {told}"


def test_resolvers_are_read_as_addresses_and_ports() -> None:
    dns = Config.model_validate(
        {"dns": {"resolvers": ["127.0.0.1", "127.0.0.1:5353", "::1", "[::1]:5353"]}}
    ).dns
    assert dns.resolver_addresses() == (
        ("127.0.0.1", 53),
        ("127.0.0.1", 5353),
        ("::1", 53),
        ("::1", 5353),
    )
