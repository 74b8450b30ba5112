"""Seed 001 (reference-server), ``POST /api/processes/terminate/{pid}``.

Checked against the schema written from the seed's prose
(schemas/001_reference_server_terminate.openapi.yaml) and Stablehand's own document:
200, 400 (already terminated), 404 and 500 ("Failed to terminate process: ...", here
the OS refusing a pidfd for a thread id) are each provoked on purpose. Stablehand's
edge adds 401 and 429, checked against its own document.
"""

from __future__ import annotations

from tests.conformance.conftest import TOKEN, Daemons, Stranger, start, wait_idle
from tests.conformance.contracts import SEED_001, call, conforms
from tests.helpers import alive

ROUTE = "/api/processes/terminate/{pid}"


def path(pid: int | str) -> str:
    return f"/api/processes/terminate/{pid}"


async def test_every_documented_status(daemons: Daemons, stranger: Stranger) -> None:
    client = daemons.main

    # 200: SIGTERM (and SIGKILL with force) to a running child.
    for force in (False, True):
        record = await start(client)
        answer = await call(client, "POST", path(record["pid"]), json_body={"force": force},
                            token=TOKEN)
        assert answer.status == 200
        body = conforms(answer, ROUTE, SEED_001)
        assert body["success"] is True and body["status"] == "terminated"
        assert body["pid"] == record["pid"]
        await wait_idle(client, record["id"])
        assert not alive(record["pid"])

    # 400: already terminated (the record is idle now).
    answer = await call(client, "POST", path(record["pid"]), json_body={}, token=TOKEN)
    assert answer.status == 400
    assert conforms(answer, ROUTE, SEED_001) == {
        "error": f"Process already terminated: PID {record['pid']}"}

    # 404: a pid nobody has; a pid Stablehand did not start (left alone by default).
    for pid in (999_999, stranger.pid):
        answer = await call(client, "POST", path(pid), json_body={}, token=TOKEN)
        assert answer.status == 404
        assert conforms(answer, ROUTE, SEED_001) == {"error": f"Process not found: PID {pid}"}
    assert alive(stranger.pid)

    # 500: with allow_unmanaged, a thread id, which pidfd_open refuses.
    answer = await call(daemons.unmanaged, "POST", path(stranger.thread_id), json_body={},
                        token=TOKEN)
    assert answer.status == 500
    assert conforms(answer, ROUTE, SEED_001)["error"].startswith("Failed to terminate process: ")
    assert alive(stranger.pid)

    # 401 and 429: Stablehand's edge, which the seed does not document.
    for token in (None, "wrong"):
        answer = await call(client, "POST", path(stranger.pid), json_body={}, token=token)
        assert answer.status == 401
        conforms(answer, ROUTE, SEED_001, seed_silent=True)
    await call(daemons.limited, "POST", path(999_999), json_body={}, token=TOKEN)
    answer = await call(daemons.limited, "POST", path(999_999), json_body={}, token=TOKEN)
    assert answer.status == 429
    assert conforms(answer, ROUTE, SEED_001, seed_silent=True)["error"] == "rate_limit_exceeded"
