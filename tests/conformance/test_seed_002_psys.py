"""Seed 002 (psys), ``POST /api/connections/kill``.

Checked against the schema written from the seed's prose (schemas/002_psys_kill.openapi.yaml)
and Stablehand's own document: 200, 400, 403, 404 and 500 ("any other unexpected error",
here the OS refusing a pidfd for a thread id) are each provoked on purpose. Stablehand's
edge adds 401 and 429, checked against its own document.
"""

from __future__ import annotations

from tests.conformance.conftest import TOKEN, Daemons, Stranger, start, wait_idle
from tests.conformance.contracts import SEED_002, call, conforms
from tests.helpers import alive

ROUTE = PATH = "/api/connections/kill"


async def test_every_documented_status(daemons: Daemons, stranger: Stranger) -> None:
    client = daemons.main

    # 200: SIGTERM to a running child, its pid as a number and as a numeric string.
    for as_text in (False, True):
        record = await start(client)
        pid = str(record["pid"]) if as_text else record["pid"]
        answer = await call(client, "POST", PATH, json_body={"pid": pid}, token=TOKEN)
        assert answer.status == 200
        assert conforms(answer, ROUTE, SEED_002) == {"ok": True}
        assert (await wait_idle(client, record["id"]))["exitSignal"] == "SIGTERM"
        assert not alive(record["pid"])

    # 400: not a number, zero, negative, not an integer, missing.
    for body in ({"pid": "abc"}, {"pid": 0}, {"pid": -1}, {"pid": 1.5}, {}):
        answer = await call(client, "POST", PATH, json_body=body, token=TOKEN)
        assert answer.status == 400, body
        assert conforms(answer, ROUTE, SEED_002) == {"error": "Invalid pid"}

    # 403: a live process Stablehand did not start (by default it is never signalled).
    answer = await call(client, "POST", PATH, json_body={"pid": stranger.pid}, token=TOKEN)
    assert answer.status == 403
    assert conforms(answer, ROUTE, SEED_002) == {"error": "Permission denied"}
    assert alive(stranger.pid)

    # 404: no such process.
    answer = await call(client, "POST", PATH, json_body={"pid": 999_999}, token=TOKEN)
    assert answer.status == 404
    assert conforms(answer, ROUTE, SEED_002) == {"error": "Process not found"}

    # 500: with allow_unmanaged, a thread id, which pidfd_open refuses.
    answer = await call(daemons.unmanaged, "POST", PATH, json_body={"pid": stranger.thread_id},
                        token=TOKEN)
    assert answer.status == 500
    assert conforms(answer, ROUTE, SEED_002) == {"error": "Failed to kill process"}
    assert alive(stranger.pid)

    # 401 and 429: Stablehand's edge, which the seed does not document.
    for token in (None, "wrong"):
        answer = await call(client, "POST", PATH, json_body={"pid": stranger.pid}, token=token)
        assert answer.status == 401
        conforms(answer, ROUTE, SEED_002, seed_silent=True)
    await call(daemons.limited, "POST", PATH, json_body={"pid": 999_999}, token=TOKEN)
    answer = await call(daemons.limited, "POST", PATH, json_body={"pid": 999_999}, token=TOKEN)
    assert answer.status == 429
    assert conforms(answer, ROUTE, SEED_002, seed_silent=True)["error"] == "rate_limit_exceeded"

