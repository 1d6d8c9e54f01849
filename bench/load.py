"""A load process: keep-alive JSON-RPC calls over HTTP and the unix socket.

It runs apart from the daemon and speaks plain HTTP/1.1 over asyncio streams,
so that its own cost per call stays small next to the daemon's and the figure
measures the daemon. Every call is bounded in count and time, and every reply
is checked to be a JSON-RPC result.

    python -m bench.load --target unix:/path/certd.sock --method core.ping \
        --concurrency 16 --seconds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Combo:
    """One kind of call: where to send it and what to send."""

    transport: str
    address: str
    method: str
    params: list[Any]
    api_key: str | None

    @property
    def label(self) -> str:
        return f"{self.transport}:{self.method}"

    def request(self) -> bytes:
        body = json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": self.method, "params": self.params}
        ).encode()
        host = self.address if self.transport == "http" else "certd"
        lines = [
            "POST /rpc HTTP/1.1",
            f"Host: {host}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
        ]
        if self.api_key and self.transport == "http":
            lines.append(f"Authorization: Bearer {self.api_key}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class Samples:
    """Start time (wall clock) and latency of each call, and the failures."""

    starts: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None


async def _open(combo: Combo) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if combo.transport == "unix":
        return await asyncio.open_unix_connection(combo.address)
    host, _, port = combo.address.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"refusing to load {host}: loopback only")
    return await asyncio.open_connection(host, int(port))


async def _read_reply(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def _connection(
    combo: Combo, samples: Samples, stop_at: float, budget: list[int], stop: Path | None
) -> None:
    reader, writer = await _open(combo)
    request = combo.request()
    clock = time.perf_counter
    try:
        while budget[0] > 0 and clock() < stop_at:
            if stop is not None and stop.exists():
                return
            budget[0] -= 1
            wall = time.time()
            started = clock()
            writer.write(request)
            status, body = await _read_reply(reader)
            elapsed = clock() - started
            reply = json.loads(body)
            if status != 200 or "result" not in reply:
                samples.errors += 1
                samples.first_error = samples.first_error or body.decode()[:300]
                continue
            samples.starts.append(wall)
            samples.latencies.append(elapsed)
    finally:
        writer.close()


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (which need not be sorted)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered)) - 1))
    return ordered[rank]


def summary(latencies: list[float], seconds: float, errors: int) -> dict[str, Any]:
    """Calls, calls per second and latency percentiles in milliseconds."""
    return {
        "calls": len(latencies),
        "errors": errors,
        "seconds": round(seconds, 4),
        "calls_per_s": round(len(latencies) / seconds, 1) if seconds else 0.0,
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 3),
        "p90_ms": round(percentile(latencies, 0.90) * 1000, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
        "max_ms": round(max(latencies, default=float("nan")) * 1000, 3),
    }


async def run(
    combos: list[Combo],
    concurrency: int,
    seconds: float,
    max_calls: int,
    warmup: float,
    stop: Path | None,
) -> dict[str, Any]:
    """Load for ``seconds`` (after ``warmup``) with ``concurrency`` connections."""
    if warmup > 0:
        warm = Samples()
        await asyncio.gather(
            *(
                _connection(
                    combos[i % len(combos)],
                    warm,
                    time.perf_counter() + warmup,
                    [max_calls],
                    None,
                )
                for i in range(concurrency)
            )
        )
        if warm.errors:
            return {"error": warm.first_error, "errors": warm.errors}
    per_combo = {combo.label: Samples() for combo in combos}
    budget = [max_calls]
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(
        *(
            _connection(
                combos[i % len(combos)],
                per_combo[combos[i % len(combos)].label],
                stop_at,
                budget,
                stop,
            )
            for i in range(concurrency)
        )
    )
    elapsed = time.perf_counter() - started
    everything = Samples()
    for samples in per_combo.values():
        everything.latencies += samples.latencies
        everything.starts += samples.starts
        everything.errors += samples.errors
    result: dict[str, Any] = {
        "concurrency": concurrency,
        "total": summary(everything.latencies, elapsed, everything.errors),
        "by_combo": {
            label: summary(s.latencies, elapsed, s.errors)
            for label, s in per_combo.items()
        },
        "first_error": next(
            (s.first_error for s in per_combo.values() if s.first_error), None
        ),
    }
    result["samples"] = [
        [label, round(start, 6), round(latency * 1000, 4)]
        for label, s in per_combo.items()
        for start, latency in zip(s.starts, s.latencies, strict=True)
    ]
    return result


def parse_target(text: str, api_key: str | None) -> tuple[str, str]:
    kind, _, address = text.partition(":")
    if kind == "http":
        return "http", address
    if kind == "unix":
        return "unix", address
    raise SystemExit(f"target {text!r}: expected http:HOST:PORT or unix:PATH")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", action="append", required=True)
    parser.add_argument(
        "--call",
        action="append",
        required=True,
        help="METHOD or METHOD=JSON_PARAMS; several are spread over the connections",
    )
    parser.add_argument("--api-key")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.3)
    parser.add_argument("--max-calls", type=int, default=2_000_000)
    parser.add_argument("--stop-file", type=Path)
    parser.add_argument("--samples", action="store_true", help="keep every sample")
    args = parser.parse_args(argv)
    combos = []
    for target in args.target:
        transport, address = parse_target(target, args.api_key)
        for call in args.call:
            method, _, params = call.partition("=")
            combos.append(
                Combo(
                    transport,
                    address,
                    method,
                    json.loads(params) if params else [],
                    args.api_key,
                )
            )
    seconds = min(args.seconds, 600.0)
    result = asyncio.run(
        run(
            combos,
            args.concurrency,
            seconds,
            args.max_calls,
            args.warmup,
            args.stop_file,
        )
    )
    if not args.samples:
        result.pop("samples", None)
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
