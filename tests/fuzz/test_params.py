"""Every method's parameters, fuzzed: a JSON-RPC error or a result, never a crash.

Each method of ``rpc.discover`` gets valid, nearly valid and hostile
parameters. A refused call must leave every table of the store exactly as it
was; an accepted job must not end in an internal error. The number of examples
per method is ``CERTD_FUZZ_EXAMPLES`` (default 15; raise it for long runs).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from certd.service import Daemon
from tests.daemon import make_config
from tests.fuzz.conftest import FuzzDaemon
from tests.fuzz.schema import method_params

EXAMPLES = int(os.environ.get("CERTD_FUZZ_EXAMPLES", "15"))
# Codes a refused call may carry; -32603 (internal error) is a bug.
REFUSALS = {-32600, -32601, -32602, -32000, -32001, -32002, -32003, -32004, -32005}


def discover() -> dict[str, dict[str, Any]]:
    with tempfile.TemporaryDirectory() as scratch:
        daemon = Daemon(make_config(Path(scratch) / "state"))
        document = daemon.registry.openrpc("fuzz")
    return {method["name"]: method for method in document["methods"]}


METHODS = discover()


def check_call(daemon: FuzzDaemon, method: dict[str, Any], params: Any) -> None:
    before = daemon.snapshot()
    request: dict[str, Any] = {"jsonrpc": "2.0", "id": 7, "method": method["name"]}
    if isinstance(params, list | dict):
        request["params"] = params
    try:
        body = json.dumps(request).encode()
    except (ValueError, RecursionError):
        return  # not representable as JSON: nothing to send
    reply = daemon.post(body)
    assert reply.status in (200, 413), (reply.status, reply.body[:300])
    assert daemon.alive(), daemon.log_tail()
    answer = reply.json()
    assert isinstance(answer, dict), answer
    if "error" in answer:
        assert answer["error"]["code"] in REFUSALS, (answer, daemon.log_tail())
        assert daemon.snapshot() == before, (
            f"{method['name']} refused but changed the store"
        )
        return
    if method.get("x-job"):
        job = daemon.wait_job(answer["result"])
        assert job["state"] in ("SUCCESS", "FAILED", "ABORTED"), job
        assert not (job["error"] or "").startswith("internal error"), (
            job,
            daemon.log_tail(),
        )


@pytest.mark.parametrize("name", sorted(METHODS))
def test_params_fuzz(fuzz_daemon: FuzzDaemon, name: str) -> None:
    method = METHODS[name]

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(method_params(method))
    def run(params: Any) -> None:
        check_call(fuzz_daemon, method, params)

    run()
