"""The Python clients' calls for agents (issue 20): a start that polls, poll(), lease(), over the
Unix socket of a real daemon (whose caller, by its uid, is the default poll consumer)."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.client import ApiError, AsyncClient, Client


@pytest.fixture
def live(daemon: Any) -> Any:
    return daemon("--grace", "2").start()


def test_client_start_with_yield_poll_and_lease(live: Any) -> None:
    with Client(socket_path=live.socket_path) as sh:
        record = sh.start(command="echo hi", yield_ms=10000, plain_env=False)
        assert record["state"] == "idle" and record["poll"]["output"] == "hi\n"
        assert sh.poll(record["id"])["output"] == ""           # the same caller: seen
        assert sh.poll(record["id"], consumer="other")["output"] == "hi\n"
        cat = sh.start(["cat"], stdin="pipe", lease=60)
        assert cat["lease"] == 60
        answer = sh.poll(cat["id"], input="typed\n", yield_ms=250)
        assert answer["output"] == "typed\n" and answer["exited"] is False
        assert sh.lease(cat["id"], seconds=120)["lease"] == 120
        sh.close_stdin(cat["id"])
        assert sh.poll(cat["id"], yield_ms=10000)["exited"] is True
        with pytest.raises(ApiError) as info:
            sh.lease(cat["id"])
        assert info.value.status == 409


async def test_async_client_poll_and_lease(live: Any) -> None:
    async with AsyncClient(socket_path=live.socket_path) as sh:
        record = await sh.start(["sleep", "300"], lease=60)
        assert (await sh.lease(record["id"]))["state"] == "running"
        answer = await sh.poll(record["id"], yield_ms=250, max_bytes=256)
        assert answer == {"output": "", "truncated": False, "exited": False, "exitCode": None,
                          "exitSignal": None, "state": "running"}
        await sh.kill(record["id"])
        assert (await sh.wait(record["id"]))["exitState"] == "canceled"
