"""A store URL that cannot work is refused at start, naming the setting, never its password."""

from __future__ import annotations

from pathlib import Path

import pytest

from certd.errors import ValidationError
from certd.service import Daemon
from tests.daemon import make_config


@pytest.mark.parametrize(
    ("url", "told"),
    [
        (
            "postgres://certd:s3cret@127.0.0.1/certd",
            "name the async driver: postgresql+asyncpg://certd:***@127.0.0.1/certd",
        ),
        (
            "sqlite:////var/lib/certd/certd.db",
            "name the async driver: sqlite+aiosqlite:////var/lib/certd/certd.db",
        ),
        (
            "mysql+aiomysql://certd:s3cret@127.0.0.1/certd",
            "its database driver 'aiomysql' is not installed (certd comes with "
            "sqlite+aiosqlite and postgresql+asyncpg)",
        ),
        (
            "postgresql+nosuchdriver://127.0.0.1/certd",
            "not a database URL SQLAlchemy knows: Can't load plugin: "
            "sqlalchemy.dialects:postgresql.nosuchdriver",
        ),
    ],
)
def test_a_url_without_a_usable_driver_is_refused(url: str, told: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Daemon(make_config(Path("/nonexistent"), store={"database_url": url}))

    assert [(e.field, e.message) for e in caught.value.errors] == [
        ("store.database_url", told)
    ]
    assert "s3cret" not in str(caught.value)


async def test_a_store_that_cannot_be_reached_is_named(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://certd:s3cret@/certd?host={tmp_path}/no-server"
    daemon = Daemon(make_config(tmp_path / "state", store={"database_url": url}))

    with pytest.raises(ValidationError) as caught:
        await daemon.start()

    [error] = caught.value.errors
    assert error.field == "store.database_url"
    assert error.message.startswith(
        "cannot open the store at postgresql+asyncpg://certd:***@/certd?host="
    )
    assert error.message.endswith("No such file or directory")
    assert "s3cret" not in error.message
    assert daemon.config.server.unix_socket is not None
    assert not daemon.config.server.unix_socket.exists()
