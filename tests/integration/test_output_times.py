"""Arrival times of output through the API: ``since`` and ``timestamps`` on
``GET /processes/{id}/output``, and the ``timestamp`` of Tensorlake's output events.

These tests need the keeper wired into the daemon: it is the keeper that writes
the arrival index (``output/<id>.<stream>.idx``) the daemon reads. Each test
that relies on the index asserts first that the index exists (``_index``), so
a daemon without it fails loudly here rather than passing on fallbacks. The
fallbacks themselves (no index: output captured before the keeper kept one)
are tested by deleting the index.

The child prints a line, waits for a line on its stdin, then prints more, so
the two parts arrive at times the test controls (no sleeps in the child).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from daemon.keeper.pump import OutputIndex
from daemon.output_times import iso_ms, since_ms
from tests.helpers import async_wait_for, printed, wait_for
from tests.integration.test_processes import start, wait_idle

TWO_PARTS = ["python3", "-c",
             "import sys; print('early', flush=True); sys.stdin.readline(); "
             "print('late', flush=True); sys.stdout.write('tail'); sys.stdout.flush()"]
BODY = b"early\nlate\ntail"


def _stream_path(client: Any, process_id: int, stream: str = "stdout") -> str:
    return str(client.supervisor.outputs.path(process_id, stream))


def _index(client: Any, process_id: int, stream: str = "stdout") -> OutputIndex:
    path = _stream_path(client, process_id, stream)
    assert os.path.exists(path + ".idx"), "no arrival index: is the keeper wired into the daemon?"
    return OutputIndex.load(path)


def _stamped(index: OutputIndex) -> bytes:
    """BODY as ``timestamps=1`` gives it: each line after the time of the first index
    record at or past its end."""
    out = b""
    for line, end in ((b"early\n", 6), (b"late\n", 11), (b"tail", 15)):
        ms = index.time_of(end - 1)
        assert ms is not None
        out += iso_ms(ms).encode() + b" " + line
    return out


async def _two_parts(client: Any) -> tuple[dict[str, Any], int]:
    """A finished TWO_PARTS process, and the unix ms when its second part was asked for
    (after the first part's index record, and at least 2 ms later)."""
    record = await start(client, argv=TWO_PARTS, stdin="pipe")
    await async_wait_for(lambda: printed(client, record["id"], "early"), what="the first part")
    wait_for(lambda: _index(client, record["id"]).ends[-1:] == [len(b"early\n")],
             what="the first part's index record")
    early_ms = _index(client, record["id"]).times[0]
    wait_for(lambda: time.time() * 1000 > early_ms + 2, what="the clock to move past it")
    between = int(time.time() * 1000)
    response = await client.post(f"/processes/{record['id']}/stdin", data=b"go\n",
                                 headers={"Content-Type": "application/octet-stream"})
    assert response.status == 200, await response.text()
    return await wait_idle(client, record["id"]), between


async def test_since_starts_at_what_arrived_then_or_later(client: Any) -> None:
    record, between = await _two_parts(client)
    index = _index(client, record["id"])
    assert index.times[0] < between <= index.times[-1]
    url = f"/processes/{record['id']}/output"
    for since in (f"{between / 1000:.3f}", iso_ms(between)):
        response = await client.get(url, params={"since": since})
        assert response.status == 200
        assert await response.read() == b"late\ntail"
        assert response.headers["X-Output-Offset"] == str(len(b"early\n"))
        assert response.headers["X-Output-Next"] == str(len(BODY))
    response = await client.get(url, params={"since": "0"})
    assert await response.read() == BODY
    response = await client.get(url, params={"since": "2999-01-01T00:00:00Z"})
    assert await response.read() == b""
    response = await client.get(url, params={"since": iso_ms(between), "offset": "8"})
    assert await response.read() == b"te\ntail"          # the later of the two starts


async def test_since_that_is_neither_unix_seconds_nor_rfc3339_is_a_400(client: Any) -> None:
    record = await start(client, argv=["true"])
    for bad in ("yesterday", "10m", "2026-12-03T13:10:49", "-1", "2026-02-30T00:00:00Z"):
        response = await client.get(f"/processes/{record['id']}/output", params={"since": bad})
        assert response.status == 400, bad
        assert "since" in (await response.json())["error"]
    response = await client.get(f"/processes/{record['id']}/output", params={"timestamps": "yes"})
    assert response.status == 400
    assert "timestamps" in (await response.json())["error"]


async def test_timestamps_prefix_each_line_with_its_arrival_time(client: Any) -> None:
    record, _ = await _two_parts(client)
    index = _index(client, record["id"])
    expected = _stamped(index)
    response = await client.get(f"/processes/{record['id']}/output", params={"timestamps": "1"})
    assert response.status == 200
    assert await response.read() == expected
    assert response.headers["X-Output-Next"] == str(len(BODY))   # offsets stay the stream's
    assert "Content-Length" not in response.headers
    times = [since_ms(line.split(b" ")[0].decode()) for line in expected.split(b"\n")]
    assert times[0] < times[1] <= times[2]
    response = await client.get(f"/processes/{record['id']}/output",
                                params={"timestamps": "1", "offset": "6"})
    assert await response.read() == expected[expected.index(b"\n") + 1:]


async def test_a_followed_stream_is_stamped_as_it_arrives(client: Any) -> None:
    record = await start(client, argv=TWO_PARTS, stdin="pipe")
    response = await client.get(f"/processes/{record['id']}/output",
                                params={"follow": "1", "timestamps": "1"})
    assert response.status == 200
    first = await response.content.readline()
    assert first.endswith(b" early\n")
    await client.post(f"/processes/{record['id']}/stdin", data=b"go\n",
                      headers={"Content-Type": "application/octet-stream"})
    rest = await response.read()
    index = _index(client, record["id"])
    assert first + rest == _stamped(index)


async def test_without_an_index_the_records_own_times_decide(client: Any) -> None:
    """Output captured before the keeper kept indexes: ``since`` by the record's start and
    end, timestamps the process's end (the next time known after every line)."""
    record, _ = await _two_parts(client)
    _index(client, record["id"])
    os.unlink(_stream_path(client, record["id"]) + ".idx")
    url = f"/processes/{record['id']}/output"
    completed = since_ms(record["completedAt"])
    response = await client.get(url, params={"since": iso_ms(completed + 1)})
    assert await response.read() == b""                     # it ended before: nothing newer
    response = await client.get(url, params={"since": iso_ms(since_ms(record["startedAt"]))})
    assert await response.read() == BODY
    response = await client.get(url, params={"timestamps": "1"})
    stamp = iso_ms(completed).encode() + b" "
    assert await response.read() == stamp + b"early\n" + stamp + b"late\n" + stamp + b"tail"


async def test_tensorlake_line_timestamps_are_arrival_times(client: Any) -> None:
    record, _ = await _two_parts(client)
    index = _index(client, record["id"])
    response = await client.get(f"/api/v1/processes/{record['pid']}/stdout/follow")
    assert response.status == 200
    events = _sse(await response.read())
    assert [(name, data.get("line")) for name, data in events] == [
        ("output", "early"), ("output", "late"), ("output", "tail"), ("eof", None)]
    assert [data["timestamp"] for _, data in events[:3]] == [
        index.time_of(5), index.time_of(10), index.time_of(14)]


async def test_a_tensorlake_follower_stamps_what_later_readers_stamp(client: Any) -> None:
    record = await start(client, argv=TWO_PARTS, stdin="pipe")
    response = await client.get(f"/api/v1/processes/{record['pid']}/stdout/follow")
    assert response.status == 200
    first = b""
    while b"\n\n" not in first:
        first += await response.content.readany()
    await client.post(f"/processes/{record['id']}/stdin", data=b"go\n",
                      headers={"Content-Type": "application/octet-stream"})
    events = _sse(first + await response.read())
    index = _index(client, record["id"])
    assert [(data.get("line"), data.get("timestamp")) for _, data in events] == [
        ("early", index.time_of(5)), ("late", index.time_of(10)), ("tail", index.time_of(14)),
        (None, None)]


async def test_tensorlake_timestamps_without_an_index_are_when_sent(client: Any) -> None:
    record, _ = await _two_parts(client)
    os.unlink(_stream_path(client, record["id"]) + ".idx")
    before = int(time.time() * 1000)
    response = await client.get(f"/api/v1/processes/{record['pid']}/stdout/follow")
    events = _sse(await response.read())
    after = int(time.time() * 1000)
    assert [data.get("line") for _, data in events] == ["early", "late", "tail", None]
    assert all(before <= data["timestamp"] <= after for _, data in events[:3])


def _sse(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in body.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events

