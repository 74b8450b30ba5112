"""Talking to running processes: output by range and follow, the byte cap, stdin, signals, stop,
delete, and the event stream."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import pytest

from daemon.keeper.pump import slack_for
from tests.helpers import async_wait_for, printed, queued_on_stdin
from tests.integration.test_processes import start, wait_idle

BOTH_STREAMS = ["python3", "-c",
                "import sys\n"
                "for i in range(50):\n"
                "    print(f'out {i}', flush=True); print(f'err {i}', file=sys.stderr, flush=True)\n"]


async def test_output_read_back_exactly_and_by_range(client: Any) -> None:
    record = await start(client, argv=BOTH_STREAMS)
    await wait_idle(client, record["id"])
    expected_out = "".join(f"out {i}\n" for i in range(50)).encode()
    expected_err = "".join(f"err {i}\n" for i in range(50)).encode()
    response = await client.get(f"/processes/{record['id']}/output")
    assert await response.read() == expected_out
    assert response.headers["X-Output-Offset"] == "0"
    assert response.headers["X-Output-Next"] == str(len(expected_out))
    response = await client.get(f"/processes/{record['id']}/output", params={"stream": "stderr"})
    assert await response.read() == expected_err
    response = await client.get(f"/processes/{record['id']}/output",
                                params={"offset": "6", "limit": "12"})
    assert await response.read() == expected_out[6:18]
    assert response.headers["X-Output-Next"] == "18"


async def test_output_ranges_far_past_the_end_read_nothing(client: Any) -> None:
    """Found by the fuzzer: a huge limit was allocated whole (500, MemoryError) and an
    offset past the filesystem's largest file made lseek fail (500, EINVAL)."""
    record = await start(client, argv=BOTH_STREAMS)
    await wait_idle(client, record["id"])
    size = len("".join(f"out {i}\n" for i in range(50)))
    url = f"/processes/{record['id']}/output"
    response = await client.get(url, params={"offset": "10", "limit": str(2**63 - 1)})
    assert response.status == 200 and len(await response.read()) == size - 10
    for offset in (str(size), "2203301864", str(2**63 - 1)):
        response = await client.get(url, params={"offset": offset, "limit": "54031112679919"})
        assert response.status == 200 and await response.read() == b""
        assert response.headers["X-Output-Offset"] == response.headers["X-Output-Next"] == offset
    response = await client.get(url, params={"offset": str(2**63 - 1), "follow": "1"})
    assert response.status == 200 and await asyncio.wait_for(response.read(), 15) == b""


async def test_follow_streams_until_the_process_exits(client: Any) -> None:
    record = await start(client, command="for i in 1 2 3 4 5; do echo line $i; sleep 0.1; done")
    response = await client.get(f"/processes/{record['id']}/output", params={"follow": "1"})
    assert response.status == 200
    body = await asyncio.wait_for(response.read(), 15)
    assert body == b"".join(f"line {i}\n".encode() for i in range(1, 6))
    assert (await client.registry.get(record["id"])).state.value == "idle"


async def test_output_cap_drops_the_oldest_bytes(make_daemon: Any) -> None:
    client = await make_daemon(max_output_bytes=64 * 1024)
    record = await start(client, argv=["python3", "-c",
                                       "import sys\nfor i in range(4000): print(f'{i:09d}' * 10)"])
    final = await wait_idle(client, record["id"])
    assert final["outputTruncated"] is True
    path = client.config.output_dir / f"{record['id']}.stdout"
    bound = 64 * 1024 + slack_for(64 * 1024) + 4096     # the cap, the keeper's slack, a block
    assert os.stat(path).st_blocks * 512 <= bound, "the keeper frees the oldest blocks as it writes"
    response = await client.get(f"/processes/{record['id']}/output")
    data = await response.read()
    start_offset = int(response.headers["X-Output-Offset"])
    assert start_offset > 0 and 0 < len(data) <= bound
    assert data.endswith(b"000003999" * 10 + b"\n"), "the newest bytes are kept"


async def test_stdin_round_trip_with_cat(client: Any) -> None:
    record = await start(client, argv=["cat"], stdin="pipe")
    response = await client.post(f"/processes/{record['id']}/stdin", data=b"hello\nworld\n")
    assert response.status == 200 and (await response.json())["written"] == 12
    assert (await client.post(f"/processes/{record['id']}/stdin/close")).status == 204
    final = await wait_idle(client, record["id"])
    assert final["exitState"] == "success"
    output = await (await client.get(f"/processes/{record['id']}/output")).read()
    assert output == b"hello\nworld\n"


async def test_stdin_without_a_pipe_is_409(client: Any) -> None:
    record = await start(client, argv=["sleep", "30"])
    response = await client.post(f"/processes/{record['id']}/stdin", data=b"x")
    assert response.status == 409 and "stdin" in (await response.json())["error"]
    assert (await client.post("/processes/99999/stdin", data=b"x")).status == 404
    await client.post(f"/processes/{record['id']}/signals/kill")
    await wait_idle(client, record["id"])


async def test_stdin_that_would_block_does_not_block_the_daemon(client: Any) -> None:
    record = await start(client, argv=["sleep", "30"], stdin="pipe")  # never reads
    # The first MiB fills the pipe (64 KiB) and most of the keeper's buffer (1 MiB); the
    # second does not fit, and waits for the child to read.
    url = f"/processes/{record['id']}/stdin"
    assert (await client.post(url, data=b"x" * (1024 * 1024))).status == 200
    writer = asyncio.ensure_future(client.post(url, data=b"y" * (1024 * 1024)))
    async def pipe_full() -> bool:
        return queued_on_stdin(record["pid"]) >= 65536
    await async_wait_for(pipe_full, what="the pipe to fill")
    response = await client.get("/healthz")  # the daemon still answers meanwhile
    assert response.status == 200
    assert not writer.done(), "the write is waiting for the child to read"
    await client.post(f"/processes/{record['id']}/signals/kill")
    await wait_idle(client, record["id"])
    response = await asyncio.wait_for(writer, 10)
    assert response.status == 409     # the process ended under the waiting write
    assert "not running" in (await response.json())["error"]


SIGNAL_REPORTER = ["python3", "-c",
                   "import signal,time\n"
                   "signal.signal(signal.SIGUSR1, lambda *a: print('got USR1', flush=True))\n"
                   "print('ready', flush=True)\n"
                   "while True: time.sleep(1)"]


@pytest.mark.parametrize("value", ["SIGUSR1", "USR1", 10, "10"])
async def test_signal_by_name_or_number(client: Any, value: Any) -> None:
    record = await start(client, argv=SIGNAL_REPORTER)
    await async_wait_for(lambda: printed(client, record["id"], "ready"))
    response = await client.post(f"/processes/{record['id']}/signal", json={"signal": value})
    assert response.status == 200 and (await response.json())["state"] == "running"
    await async_wait_for(lambda: printed(client, record["id"], "got USR1"))
    await client.post(f"/processes/{record['id']}/signals/kill")
    await wait_idle(client, record["id"])


async def test_signal_errors(client: Any) -> None:
    record = await start(client, argv=["true"])
    await wait_idle(client, record["id"])
    response = await client.post(f"/processes/{record['id']}/signal", json={"signal": "SIGTERM"})
    assert response.status == 409
    for bad in ("SIGNOPE", 0, 999, None, True):
        response = await client.post(f"/processes/{record['id']}/signal", json={"signal": bad})
        assert response.status == 400
    assert (await client.post("/processes/99999/signal", json={"signal": 15})).status == 404


async def test_stop_with_a_custom_signal(client: Any) -> None:
    record = await start(client, argv=["sleep", "30"])
    response = await client.post(f"/processes/{record['id']}/stop", json={"signal": "SIGINT", "grace": 5})
    assert response.status == 200 and (await response.json())["state"] == "terminating"
    final = await wait_idle(client, record["id"])
    assert final["exitState"] == "canceled" and final["exitSignal"] == "SIGINT"
    again = await client.post(f"/processes/{record['id']}/stop", json={})
    assert again.status == 409


async def test_delete_forgets_an_idle_record_and_its_output(client: Any) -> None:
    running = await start(client, argv=["sh", "-c", "echo out; exec sleep 30"])
    output_of = client.config.output_dir

    async def written() -> bool:   # the keeper makes a stream's file (and index) at its first byte
        return len(list(output_of.glob(f"{running['id']}.*"))) == 2
    await async_wait_for(written, what="stdout and its index")
    response = await client.delete(f"/processes/{running['id']}")
    assert response.status == 409
    await client.post(f"/processes/{running['id']}/signals/kill")
    await wait_idle(client, running["id"])
    assert (await client.delete(f"/processes/{running['id']}")).status == 204
    assert (await client.get(f"/processes/{running['id']}")).status == 404
    assert not list(client.config.output_dir.glob(f"{running['id']}.*"))
    assert (await client.delete(f"/processes/{running['id']}")).status == 404



async def test_reads_racing_a_delete_never_bring_the_record_back(client: Any) -> None:
    """Settled records are read from memory; a read that was at SQLite while the row
    was deleted must not put it back there."""
    for _ in range(10):
        record = await start(client, argv=["true"])
        await wait_idle(client, record["id"])
        url = f"/processes/{record['id']}"
        responses = await asyncio.gather(client.delete(url), *[client.get(url) for _ in range(4)],
                                         client.get(url + "/wait?timeout=1"))
        assert responses[0].status == 204
        assert {r.status for r in responses[1:]} <= {200, 404}
        assert (await client.get(url)).status == 404
        assert (await client.get(url + "/wait?timeout=1")).status == 404

async def _read_events(response: Any, count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("id: "):
            current["seq"] = int(line[4:])
        elif line.startswith("data: "):
            current["data"] = json.loads(line[6:])
        elif line == "" and current:
            events.append(current)
            current = {}
            if len(events) == count:
                return events
    return events


async def test_events_in_order_and_resume_with_last_event_id(client: Any) -> None:
    response = await client.get("/events")
    assert response.headers["Content-Type"] == "text/event-stream"
    record = await start(client, argv=["sleep", "30"], ref="evt")
    await client.post(f"/processes/{record['id']}/signals/kill")
    await wait_idle(client, record["id"])
    events = await asyncio.wait_for(_read_events(response, 3), 10)
    assert [e["data"]["state"] for e in events] == ["running", "terminating", "idle"]
    assert events[-1]["data"]["exitState"] == "canceled" and events[-1]["data"]["id"] == record["id"]
    response.close()
    resumed = await client.get("/events", headers={"Last-Event-ID": str(events[0]["seq"])},
                               params={"ref": "evt"})
    again = await asyncio.wait_for(_read_events(resumed, 2), 10)
    assert [e["seq"] for e in again] == [events[1]["seq"], events[2]["seq"]]
    resumed.close()


async def test_output_written_after_the_leader_exits_stays_with_its_record(
        make_daemon: Any, tmp_path: Any) -> None:
    # The leader exits at once; a process that left its session still holds stdout
    # and writes later: the keeper goes on pumping that pipe into the record's file.
    client = await make_daemon()
    # The leader leaves only once the other process is out of its group (it makes
    # the flag after setsid), so the group sweep does not stop it as a straggler.
    flag = tmp_path / "left"
    record = await start(client, command=f"(setsid sh -c 'touch {flag}; sleep 0.3; echo late' &); "
                                         f"until [ -e {flag} ]; do sleep 0.01; done")
    assert (await wait_idle(client, record["id"]))["exitState"] == "success"
    other = await start(client, argv=["sleep", "5"])
    await async_wait_for(lambda: printed(client, record["id"], "late"), what="the late write")
    response = await client.get(f"/processes/{other['id']}/output?stream=stdout")
    assert await response.read() == b""
    await client.post(f"/processes/{other['id']}/signals/kill")
    await wait_idle(client, other["id"])
