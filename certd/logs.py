"""Structured logging: one JSON object per line, or a readable console format.

Secrets never reach a log line: besides callers never passing them, a final
processor masks values of keys that look like secrets, as a second line of
defence.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

SECRET_KEY_PARTS = (
    "secret",
    "password",
    "passphrase",
    "privatekey",
    "private_key",
    "api_key",
    "api_token",
    "token",
    "authorization",
    "hmac",
)


def _is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return any(part in lowered for part in SECRET_KEY_PARTS)


def mask_secrets(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Replace the value of every secret-looking key with a fixed mask."""
    for key in list(event_dict):
        if key != "event" and _is_secret_key(key):
            event_dict[key] = "********"
    return event_dict


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Route structlog and the standard library's logging to stderr."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    numeric = getattr(logging, level.upper())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        mask_secrets,
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer()
        if use_console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.INFO))
    # Library chatter (aiohttp access lines, botocore) stays out unless asked for.
    for noisy in ("aiohttp.access", "botocore", "aiobotocore", "asyncio", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
