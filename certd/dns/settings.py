"""How DNS-01 values are looked for once published.

Apart from the resolver code so that the daemon can hold these settings
without loading dnspython, which only an order or a provider test needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Server = tuple[str, int]


@dataclass(frozen=True)
class PropagationSettings:
    """Where and how long to look for published TXT values."""

    timeout: float = 120.0
    initial_interval: float = 0.05
    max_interval: float = 2.0
    resolvers: tuple[Server, ...] = ()
    nameserver_port: int = 53
    mode: Literal["authoritative", "resolvers"] = "authoritative"
    follow_cnames: bool = True
    query_timeout: float = 2.0
