"""The certd command: run the daemon, call its API, manage API keys."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from certd import __version__
from certd.config import Config, load_config
from certd.errors import CertdError, ValidationError


def _config(args: argparse.Namespace) -> Config:
    path = args.config or os.environ.get("CERTD_CONFIG")
    return load_config(Path(path) if path else None)


def cmd_serve(args: argparse.Namespace) -> int:
    from certd.logs import configure_logging
    from certd.service import serve

    config = _config(args)
    configure_logging(config.log.level, config.log.format)
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        # A port in use, a path that cannot be made: say so in one line.
        print(f"certd: cannot start: {exc}", file=sys.stderr)
        return 2
    return 0


def _parse_params(raw: list[str]) -> list[Any]:
    params = []
    for index, text in enumerate(raw):
        try:
            params.append(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ValidationError.single(
                f"params.{index}",
                f"not valid JSON ({exc.msg}); quote strings as '\"x\"'",
            ) from exc
    return params


def _progress_printer() -> Any:
    interactive = sys.stderr.isatty()

    def show(percent: float, description: str) -> None:
        line = f"[{percent:5.1f}%] {description}"
        if interactive:
            sys.stderr.write("\r\033[K" + line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    return show


async def _call(args: argparse.Namespace) -> Any:
    from certd.client import Client

    params = _parse_params(args.params)
    # A key read from a file or a here-document may end with a newline.
    api_key = (args.api_key or os.environ.get("CERTD_API_KEY") or "").strip()
    if args.url:
        _check_url(args.url)
        if not api_key:
            # Over HTTP every call needs a key; over the socket the user id does.
            raise ValidationError.single(
                "--api-key",
                "a call over --url needs an API key: give --api-key or set "
                "CERTD_API_KEY (certd apikey create NAME makes one)",
            )
        client = Client(url=args.url, api_key=api_key)
    else:
        socket = _config(args).server.unix_socket
        if socket is None:
            raise ValidationError.single(
                "--url", "no unix socket is configured; give --url"
            )
        client = Client(socket=socket, api_key=api_key)
    async with client:
        is_job = False
        if not args.no_wait:
            document = await client.call("rpc.discover")
            is_job = any(
                m["name"] == args.method and m.get("x-job") for m in document["methods"]
            )
        result = await client.call(args.method, *params)
        if is_job:
            show = _progress_printer()
            try:
                result = await client.wait_job(result, show)
            finally:
                if sys.stderr.isatty():
                    sys.stderr.write("\n")
        return result


def _check_url(url: str) -> None:
    """Refuse a --url the client could only fail on, with a traceback."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError as exc:
        raise ValidationError.single("--url", f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError.single(
            "--url", "give the daemon's address as http://HOST:PORT or https://..."
        )
    if parts.username is not None or parts.password is not None:
        raise ValidationError.single(
            "--url", "carries a user name or password; give the API key instead"
        )


def cmd_call(args: argparse.Namespace) -> int:
    import aiohttp

    from certd.client import RpcError

    try:
        result = asyncio.run(_call(args))
    except aiohttp.ClientConnectionError as exc:
        where = args.url or "the unix socket"
        print(
            f"certd: cannot reach the daemon at {where} ({exc.__class__.__name__}); "
            "is it running, and does --config (or CERTD_CONFIG) name its config?",
            file=sys.stderr,
        )
        return 3
    except RpcError as exc:
        print(
            json.dumps(
                {"code": exc.code, "message": exc.message, "data": exc.data}, indent=2
            ),
            file=sys.stderr,
        )
        return 1
    try:
        print(json.dumps(result, indent=2))
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader (head, less) went away: not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


async def _apikey(args: argparse.Namespace) -> int:
    from certd.api.auth import ApiKeys, client_form
    from certd.store.db import Database

    config = _config(args)
    config.store.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Keys live in the daemon's store; say which one, since a missing
    # --config silently means the default one.
    print(f"store: {config.store.url()}", file=sys.stderr)
    # A running daemon takes SQLite's write lock again right after each commit,
    # and this process only polls for it: give it time to find a gap.
    db = Database(config.store.url(), lock_wait=60.0)
    try:
        await db.migrate()
        keys = ApiKeys(db)
        if args.apikey_command == "create":
            entry, key = await keys.create(args.name, readonly=args.readonly)
            print(key)
            print(
                f"API key {entry['name']!r} created; it is shown only this once.\n"
                f"For midclt and the NAS middleware's client the same key reads "
                f"{client_form(entry['id'], key)} (user name {entry['name']!r}).",
                file=sys.stderr,
            )
        elif args.apikey_command == "list":
            print(json.dumps(await keys.list(), indent=2))
        elif args.apikey_command == "revoke":
            await keys.revoke(args.name)
            print(f"API key {args.name!r} revoked.", file=sys.stderr)
    finally:
        await db.close()
    return 0


def cmd_apikey(args: argparse.Namespace) -> int:
    import logging

    logging.disable(logging.INFO)
    from certd.logs import configure_logging

    configure_logging("warning", "console")
    return asyncio.run(_apikey(args))


async def _rotate_master_key(args: argparse.Namespace) -> int:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from certd.deploy.events import rekey_deliveries
    from certd.store.crypto import Keyring
    from certd.store.db import Database
    from certd.store.masterkey import rotate_master_key, state_lock

    config = _config(args)
    store = config.store
    urls = [hook.url for hook in config.events.webhooks]
    renamed = 0

    async def rekey(conn: AsyncConnection, old: Keyring, new: Keyring) -> None:
        # Pending webhook deliveries are named under a key of the master key.
        nonlocal renamed
        renamed = await rekey_deliveries(conn, old, new, urls)

    new_key_file = Path(args.new_key_file) if args.new_key_file else None
    with state_lock(store.state_dir, exclusive=True):
        db = Database(store.url())
        try:
            await db.migrate()
            old_id, new_id, count = await rotate_master_key(
                db, store.state_dir, store.master_key_file, new_key_file, rekey=rekey
            )
        finally:
            await db.close()
    print(
        f"master key rotated from {old_id} to {new_id}; "
        f"{count} stored secret(s) re-encrypted",
        file=sys.stderr,
    )
    if renamed:
        print(
            f"{renamed} pending webhook delivery(ies) renamed under the new key",
            file=sys.stderr,
        )
    if new_key_file is not None:
        print(
            f"point store.master_key_file (or the certd-master-key credential) "
            f"at {new_key_file} before the next start",
            file=sys.stderr,
        )
    return 0


def cmd_rotate_master_key(args: argparse.Namespace) -> int:
    from certd.logs import configure_logging

    configure_logging("warning", "console")
    return asyncio.run(_rotate_master_key(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="certd", description=__doc__)
    parser.add_argument("--version", action="version", version=f"certd {__version__}")
    parser.add_argument(
        "--config", "-c", help="TOML config file (default: none, or $CERTD_CONFIG)"
    )
    # --config is accepted after the sub-command too ("certd serve --config x").
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        "-c",
        default=argparse.SUPPRESS,
        help="TOML config file (default: none, or $CERTD_CONFIG)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve", parents=[common], help="run the daemon in the foreground"
    )
    serve.set_defaults(func=cmd_serve)

    call = sub.add_parser(
        "call", parents=[common], help="call one API method and print its JSON result"
    )
    call.add_argument("method")
    call.add_argument("params", nargs="*", help="positional parameters, each as JSON")
    call.add_argument("--url", help="HTTP base URL (default: the unix socket)")
    call.add_argument("--api-key", help="API key for HTTP (default: $CERTD_API_KEY)")
    call.add_argument(
        "--no-wait", action="store_true", help="print a job's id, do not wait"
    )
    call.set_defaults(func=cmd_call)

    apikey = sub.add_parser(
        "apikey", parents=[common], help="manage API keys (works on the store directly)"
    )
    apikey_sub = apikey.add_subparsers(dest="apikey_command", required=True)
    create = apikey_sub.add_parser(
        "create", parents=[common], help="create a key and print it once"
    )
    create.add_argument("name")
    create.add_argument(
        "--readonly", action="store_true", help="allow only reading calls"
    )
    apikey_sub.add_parser(
        "list", parents=[common], help="list keys (never the secrets)"
    )
    revoke = apikey_sub.add_parser(
        "revoke", parents=[common], help="revoke a key by name"
    )
    revoke.add_argument("name")
    apikey.set_defaults(func=cmd_apikey)

    rotate = sub.add_parser(
        "rotate-master-key",
        parents=[common],
        help="re-encrypt every stored secret under a new master key "
        "(stop the daemon first)",
    )
    rotate.add_argument(
        "--new-key-file",
        help="read the new key from this file (created if missing); needed when "
        "the key is a configured file or a systemd credential",
    )
    rotate.set_defaults(func=cmd_rotate_master_key)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Whatever a command creates (a store, a key file) is private from the start.
    os.umask(0o077)
    try:
        return int(args.func(args))
    except CertdError as exc:
        print(f"certd: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
