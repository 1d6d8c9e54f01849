"""An idle daemon leaves out the libraries only some requests need."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

# Each costs megabytes of resident memory and is needed only to migrate an
# old store (alembic), to talk to a CA (acme, josepy, requests, pyOpenSSL),
# to touch DNS (dnspython) or to run a "~" filter (regex).
LEFT_OUT = ("alembic", "mako", "acme", "josepy", "requests", "OpenSSL", "dns", "regex")

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from pathlib import Path
    from certd.api.filters import QueryOptions
    from certd.config import Config
    from certd.service import Daemon

    state = Path(sys.argv[1])
    config = Config.model_validate({
        "server": {"http_port": 0, "unix_socket": str(state / "certd.sock")},
        "store": {"state_dir": str(state)},
        "log": {"level": "error", "format": "json"},
        "renewal": {"enabled": True},
    })

    async def main():
        daemon = Daemon(config)
        await daemon.start()
        try:
            await daemon.services["certificate"].query([], QueryOptions(count=True))
            await daemon.renewal.scan()
        finally:
            await daemon.stop()
        loaded = sorted({name.split(".")[0] for name in sys.modules})
        print(json.dumps(loaded))

    asyncio.run(main())
    """
)


def _loaded_after_start(state: Path) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(state)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_a_new_and_a_restarted_daemon_load_none_of_them(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = _loaded_after_start(state)
    assert "sqlalchemy" in first and "aiohttp" in first
    assert [name for name in LEFT_OUT if name in first] == []
    # The second start finds the schema current.
    again = _loaded_after_start(state)
    assert [name for name in LEFT_OUT if name in again] == []
