"""Seed 000 (reference-server), ``POST /api/process/terminate-gracefully/{pid}``.

Checked against the schema written from the seed's prose
(schemas/000_reference_server_terminate_gracefully.openapi.yaml) and Stablehand's own
document. The seed documents 200, 400 (termination failed) and 500 ("Server error:
..."). The 500 cannot be provoked: the seed's Flask handler answers it for an
exception it did not expect, and every failure Stablehand's handler can meet (an
unknown, exited or unsignallable pid, a bad body) is the seed's 400 failure body.
Stablehand's edge adds 401 and 429, checked against its own document.
"""

from __future__ import annotations

from tests.conformance.conftest import TOKEN, Daemons, Stranger, start, wait_idle
from tests.conformance.contracts import SEED_000, call, conforms
from tests.helpers import alive

ROUTE = "/api/process/terminate-gracefully/{pid}"


def path(pid: int | str) -> str:
    return f"/api/process/terminate-gracefully/{pid}"


async def test_every_documented_status(daemons: Daemons, stranger: Stranger) -> None:
    client = daemons.main

    # 200: SIGTERM, and the answer once the tree is gone.
    record = await start(client)
    answer = await call(client, "POST", path(record["pid"]), json_body={"timeout": 5}, token=TOKEN)
    assert answer.status == 200
    body = conforms(answer, ROUTE, SEED_000)
    assert body["success"] is True and body["pid"] == record["pid"]
    assert body["message"] == f"Process {record['pid']} terminated successfully"
    assert not alive(record["pid"])
    await wait_idle(client, record["id"])

    # 400, the seed's "Termination Failed" body: the same pid again (its process is gone),
    # a pid nobody has, a pid Stablehand did not start (left alone by default), a bad timeout.
    for pid, request in ((record["pid"], {}), (999_999, {}), (stranger.pid, {"timeout": 1}),
                         (stranger.pid, {"timeout": "soon"})):
        answer = await call(client, "POST", path(pid), json_body=request, token=TOKEN)
        assert answer.status == 400, pid
        body = conforms(answer, ROUTE, SEED_000)
        assert body["success"] is False and body["pid"] == pid
    assert alive(stranger.pid)

    # 401 and 429: Stablehand's edge, which the seed does not document.
    for token in (None, "wrong"):
        answer = await call(client, "POST", path(stranger.pid), json_body={}, token=token)
        assert answer.status == 401
        conforms(answer, ROUTE, SEED_000, seed_silent=True)
    await call(daemons.limited, "POST", path(999_999), json_body={}, token=TOKEN)
    answer = await call(daemons.limited, "POST", path(999_999), json_body={}, token=TOKEN)
    assert answer.status == 429
    assert conforms(answer, ROUTE, SEED_000, seed_silent=True)["error"] == "rate_limit_exceeded"
