"""Seed 004 (Cyrnel), ``POST /processes/{id}/signals/kill``, against its own OpenAPI fragment.

Every status the fragment documents is provoked on purpose and the answer validated
(body and documented headers) against schemas/004_cyrnel_kill.openapi.yaml and
Stablehand's own document. The one it documents but no request can provoke: 500
("The process could not be terminated"): signalling our own child through its pidfd
does not fail, and a storage failure is Stablehand's 503, which Cyrnel does not list.
"""

from __future__ import annotations

from typing import Any

from tests.conformance.conftest import (
    TOKEN,
    Daemons,
    force_kill,
    start,
    start_ignoring_term,
    wait_idle,
)
from tests.conformance.contracts import SEED_004, call, conforms
from tests.helpers import alive

ROUTE = "/processes/{id}/signals/kill"


def kill_path(process_id: int | str) -> str:
    return f"/processes/{process_id}/signals/kill"


async def kill_running(client: Any, record: dict[str, Any], body: Any) -> None:
    """200: the record comes back terminating, `ref` as given or left out (never null)."""
    answer = await call(client, "POST", kill_path(record["id"]), json_body=body, token=TOKEN)
    assert answer.status == 200
    killed = conforms(answer, ROUTE, SEED_004)
    assert killed["state"] == "terminating" and killed["exitState"] is None
    assert killed["completedAt"] is None and killed["error"] is None
    assert killed.get("ref") == record.get("ref")


async def test_every_documented_status(daemons: Daemons) -> None:
    client = daemons.main

    # 200: a running process without a ref, then one with a ref that ignores SIGTERM
    # (started only now, so that a failure above does not wait out its 60 s grace).
    plain = await start(client)
    await kill_running(client, plain, {})
    stubborn = await start_ignoring_term(client, ref="agent-7")
    await kill_running(client, stubborn, {"anything": [1, None]})

    # 409: already terminating (it ignores SIGTERM for 60 s), then already idle.
    answer = await call(client, "POST", kill_path(stubborn["id"]), json_body={}, token=TOKEN)
    assert answer.status == 409
    assert conforms(answer, ROUTE, SEED_004) == {
        "error": f"process {stubborn['id']} is already terminating"}
    await force_kill(client, stubborn)
    for record in (plain, stubborn):
        assert (await wait_idle(client, record["id"]))["exitState"] == "canceled"
        assert not alive(record["pid"])
    answer = await call(client, "POST", kill_path(plain["id"]), json_body={}, token=TOKEN)
    assert answer.status == 409
    assert conforms(answer, ROUTE, SEED_004) == {"error": f"process {plain['id']} is already idle"}

    # 400: an id that is not a positive integer, a body that is not an object.
    for path, body in ((kill_path("abc"), {}), (kill_path(0), {}), (kill_path(-3), {}),
                       (kill_path(plain["id"]), [1])):
        answer = await call(client, "POST", path, json_body=body, token=TOKEN)
        assert answer.status == 400, path
        conforms(answer, ROUTE, SEED_004)

    # 401: no token, a wrong one.
    for token in (None, "wrong"):
        answer = await call(client, "POST", kill_path(plain["id"]), json_body={}, token=token)
        assert answer.status == 401
        conforms(answer, ROUTE, SEED_004)

    # 404: an id nobody was given.
    answer = await call(client, "POST", kill_path(31337), json_body={}, token=TOKEN)
    assert answer.status == 404
    assert conforms(answer, ROUTE, SEED_004) == {"error": "process 31337 not found"}

    # 429: the limited daemon's one token is spent by the first request.
    first = await call(daemons.limited, "POST", kill_path(31337), json_body={}, token=TOKEN)
    assert first.status == 404 and first.headers["X-RateLimit-Remaining"] == "0"
    answer = await call(daemons.limited, "POST", kill_path(31337), json_body={}, token=TOKEN)
    assert answer.status == 429
    body = conforms(answer, ROUTE, SEED_004)
    assert body["error"] == "rate_limit_exceeded" and body["retryAfter"] >= 1
    assert int(answer.headers["Retry-After"]) == body["retryAfter"]
