"""Seed 003 (Tensorlake), ``DELETE /api/v1/processes/{pid}``, against its own OpenAPI fragment.

The fragment documents 204, 404 and 500 (schemas/003_tensorlake_kill.openapi.yaml);
each is provoked on purpose and checked against it and Stablehand's own document.
It also declares bearer auth, so 401 is reachable, and Stablehand's edge adds 429 and
400 (digits past an int32, or a name no process could have; any other text is a
managed process's name, 404 when none has it): those the fragment lists no body for
are checked against Stablehand's document alone.
"""

from __future__ import annotations

from tests.conformance.conftest import TOKEN, Daemons, Stranger, start, wait_idle
from tests.conformance.contracts import SEED_003, call, conforms
from tests.helpers import alive

ROUTE = "/api/v1/processes/{pid}"


async def test_every_documented_status(daemons: Daemons, stranger: Stranger) -> None:
    client = daemons.main

    # 204: a running child is SIGKILLed, gone before the answer, its record idle.
    record = await start(client)
    answer = await call(client, "DELETE", f"/api/v1/processes/{record['pid']}", token=TOKEN)
    assert answer.status == 204
    assert conforms(answer, ROUTE, SEED_003) is None
    assert not alive(record["pid"])
    assert (await wait_idle(client, record["id"]))["exitState"] == "canceled"

    # 404: a pid nobody has, the same child again (its record is idle now), a pid
    # Stablehand did not start (left alone by default), integers no process can have,
    # and names no managed process has (Tensorlake's {pid} is a pid or a name).
    for pid in (999_999, record["pid"], stranger.pid, 0, -5, 2_147_483_647, "abc", "web%201"):
        answer = await call(client, "DELETE", f"/api/v1/processes/{pid}", token=TOKEN)
        assert answer.status == 404, pid
        assert conforms(answer, ROUTE, SEED_003)["code"] == "not_found"
    assert alive(stranger.pid)

    # 500: with allow_unmanaged, a thread id: kill(2) would take it, pidfd_open refuses it.
    answer = await call(daemons.unmanaged, "DELETE", f"/api/v1/processes/{stranger.thread_id}",
                        token=TOKEN)
    assert answer.status == 500
    assert conforms(answer, ROUTE, SEED_003)["code"] == "kill_failed"
    assert alive(stranger.pid)

    # 401: the fragment's bearerAuth, missing or wrong.
    for token in (None, "wrong"):
        answer = await call(client, "DELETE", f"/api/v1/processes/{stranger.pid}", token=token)
        assert answer.status == 401
        assert conforms(answer, ROUTE, SEED_003, seed_silent=True)["code"] == "unauthorized"

    # 400: digits past any int32 (the fragment's path parameter), and a name no process
    # could have (a control character).
    answer = await call(client, "DELETE", f"/api/v1/processes/{'9' * 11}", token=TOKEN)
    assert answer.status == 400
    assert conforms(answer, ROUTE, SEED_003, seed_silent=True)["code"] == "invalid_pid"
    answer = await call(client, "DELETE", "/api/v1/processes/a%01b", token=TOKEN)
    assert answer.status == 400
    assert conforms(answer, ROUTE, SEED_003, seed_silent=True)["code"] == "invalid_name"

    # 429: the limited daemon's one token is spent by the first request.
    first = await call(daemons.limited, "DELETE", "/api/v1/processes/999999", token=TOKEN)
    assert first.status == 404
    answer = await call(daemons.limited, "DELETE", "/api/v1/processes/999999", token=TOKEN)
    assert answer.status == 429
    assert conforms(answer, ROUTE, SEED_003, seed_silent=True)["error"] == "rate_limit_exceeded"
    assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset",
            "Retry-After"} <= set(answer.headers)
