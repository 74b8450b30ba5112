"""Output routes stream from disk: exact bytes with a length, giant lines cut into bounded
pieces, the Tensorlake JSON document written piece by piece."""

from __future__ import annotations

import json
from typing import Any

from daemon.http.tensorlake import MAX_LINE
from daemon.output import READ_CHUNK
from tests.integration.test_processes import start, wait_idle

# A line of 2.5 MiB (no newline until its end), a short line, and an unterminated tail.
GIANT = ["python3", "-c",
         ("import sys\n"
          f"sys.stdout.write('a' * ({MAX_LINE} * 5 // 2) + '\\n' + 'short\\n' + 'tail')\n")]
# 'x' then two-byte characters: a piece cut at MAX_LINE would fall inside one of them.
WIDE = ["python3", "-c", f"import sys\nsys.stdout.write('x' + '\\u00e9' * ({MAX_LINE} // 2 + 5))\n"]
BINARY = ["python3", "-c",
          "import sys\nsys.stdout.buffer.write(bytes(range(256)) * 3000)\n"]


async def test_native_output_has_a_length_and_exact_bytes_across_chunks(client: Any) -> None:
    record = await start(client, argv=BINARY)
    await wait_idle(client, record["id"])
    data = bytes(range(256)) * 3000
    assert len(data) > 2 * READ_CHUNK
    response = await client.get(f"/processes/{record['id']}/output")
    assert response.headers["Content-Length"] == str(len(data))
    assert await response.read() == data
    offset, limit = READ_CHUNK - 7, READ_CHUNK + 11
    response = await client.get(f"/processes/{record['id']}/output",
                                params={"offset": str(offset), "limit": str(limit)})
    assert await response.read() == data[offset:offset + limit]
    assert response.headers["X-Output-Offset"] == str(offset)
    assert response.headers["X-Output-Next"] == str(offset + limit)
    assert response.headers["Content-Length"] == str(limit)
    response = await client.get(f"/processes/{record['id']}/output", params={"follow": "1"})
    assert await response.read() == data


async def test_a_giant_line_comes_in_pieces_of_at_most_max_line(client: Any) -> None:
    record = await start(client, argv=GIANT)
    await wait_idle(client, record["id"])
    response = await client.get(f"/api/v1/processes/{record['pid']}/output")
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    body = json.loads(await response.read())
    expected = ["a" * MAX_LINE, "a" * MAX_LINE, "a" * (MAX_LINE // 2), "short", "tail"]
    assert body == {"pid": record["pid"], "lines": expected, "line_count": 5}
    response = await client.get(f"/api/v1/processes/{record['pid']}/stdout/follow")
    followed = [json.loads(line[6:])["line"] for line in (await response.text()).split("\n")
                if line.startswith("data: ") and '"line"' in line]
    assert followed == expected


async def test_pieces_are_cut_between_characters(client: Any) -> None:
    record = await start(client, argv=WIDE)
    await wait_idle(client, record["id"])
    lines = (await (await client.get(f"/api/v1/processes/{record['pid']}/stdout")).json())["lines"]
    assert len(lines) == 2 and "\ufffd" not in "".join(lines)
    assert "".join(lines) == "x" + "\u00e9" * (MAX_LINE // 2 + 5)
    assert all(len(line.encode()) <= MAX_LINE for line in lines)


async def test_no_output_is_an_empty_document(client: Any) -> None:
    record = await start(client, argv=["true"])
    await wait_idle(client, record["id"])
    for name in ("stdout", "stderr", "output"):
        response = await client.get(f"/api/v1/processes/{record['pid']}/{name}")
        assert response.status == 200
        assert await response.json() == {"pid": record["pid"], "lines": [], "line_count": 0}


async def test_head_requests_get_headers_and_no_body(client: Any) -> None:
    """A streamed HEAD response must carry no body bytes: they would be read as the
    next response on the kept-alive connection."""
    record = await start(client, argv=["python3", "-c", "print('x' * 1000)"])
    await wait_idle(client, record["id"])
    targets = [f"/processes/{record['id']}/output", f"/processes/{record['id']}/output?follow=1",
               f"/api/v1/processes/{record['pid']}/output",
               f"/api/v1/processes/{record['pid']}/stdout/follow", "/events"]
    for target in targets:
        response = await client.head(target)
        assert response.status == 200 and await response.read() == b"", target
        assert (await client.get("/healthz")).status == 200, f"the connection after HEAD {target}"
    response = await client.head(f"/processes/{record['id']}/output")
    assert response.headers["Content-Length"] == response.headers["X-Output-Next"] == "1001"
