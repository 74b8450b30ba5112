"""Exec-then-poll (issue 20): waiting server-side, cursors per consumer, the head + tail cap,
the start that polls, and the plain environment children get."""

from __future__ import annotations

import os
import re
import time
from typing import Any

from tests.helpers import alive, async_wait_for, printed
from tests.integration.test_processes import start, wait_idle

MARKER = re.compile(r"\[\.\.\. (\d+) bytes omitted \.\.\.\]\n")


async def poll(client: Any, process_id: int, status: int = 200, **body: Any) -> dict[str, Any]:
    response = await client.post(f"/processes/{process_id}/poll", json=body)
    assert response.status == status, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


async def kill(client: Any, process_id: int) -> None:
    response = await client.post(f"/processes/{process_id}/signals/kill", json={})
    assert response.status == 200, await response.text()
    await wait_idle(client, process_id)


async def test_first_output_comes_back_at_the_yield_while_the_process_runs(client: Any) -> None:
    record = await start(client, command="echo first; sleep 300")
    await async_wait_for(lambda: printed(client, record["id"], "first"), what="the first line")
    answer = await poll(client, record["id"], yieldMs=250)
    assert answer == {"output": "first\n", "truncated": False, "exited": False, "exitCode": None,
                      "exitSignal": None, "state": "running"}
    assert alive(record["pid"])            # it answered at the yield, not at the exit
    assert (await poll(client, record["id"], yieldMs=250))["output"] == ""   # seen already
    await kill(client, record["id"])


async def test_the_exit_is_reported_as_soon_as_it_happens(client: Any) -> None:
    record = await start(client, command="sleep 0.2; echo done")
    began = time.monotonic()
    answer = await poll(client, record["id"], yieldMs=10000)
    assert time.monotonic() - began < 8            # loosely: it did not wait out the 10 s
    assert answer == {"output": "done\n", "truncated": False, "exited": True, "exitCode": 0,
                      "exitSignal": None, "state": "idle"}


async def test_a_start_with_yield_returns_the_output_and_the_exit_in_one_call(client: Any) -> None:
    response = await client.post("/processes", json={"command": "echo hi", "yieldMs": 10000})
    assert response.status == 201, await response.text()
    body = await response.json()
    assert body["state"] == "idle" and body["exitState"] == "success" and body["exitCode"] == 0
    assert body["poll"] == {"output": "hi\n", "truncated": False, "exited": True, "exitCode": 0,
                            "exitSignal": None, "state": "idle"}
    # the start's poll moved the caller's own cursor
    assert (await poll(client, body["id"]))["output"] == ""


async def test_each_consumer_sees_everything_once(client: Any) -> None:
    record = await start(client, command="echo one; read line; echo two $line", stdin="pipe")
    await async_wait_for(lambda: printed(client, record["id"], "one"), what="the first line")
    assert (await poll(client, record["id"], yieldMs=250, consumer="a"))["output"] == "one\n"
    assert (await poll(client, record["id"], yieldMs=250, consumer="b"))["output"] == "one\n"
    assert (await poll(client, record["id"], yieldMs=250))["output"] == "one\n"   # the caller's
    assert (await poll(client, record["id"], yieldMs=250, consumer="a"))["output"] == ""
    answer = await poll(client, record["id"], yieldMs=10000, consumer="a", input="go\n")
    assert answer["output"] == "two go\n" and answer["exited"] is True
    assert (await poll(client, record["id"], consumer="b"))["output"] == "two go\n"
    assert (await poll(client, record["id"], consumer="a"))["output"] == ""
    assert (await poll(client, record["id"]))["output"] == "two go\n"


async def test_stdout_and_stderr_are_merged_by_arrival(client: Any) -> None:
    script = ("import sys, time\n"
              "for i in range(6):\n"
              "    stream = sys.stdout if i % 2 == 0 else sys.stderr\n"
              "    print(f'line {i}', file=stream, flush=True)\n"
              "    time.sleep(0.05)\n")
    record = await start(client, argv=["python3", "-c", script])
    answer = await poll(client, record["id"], yieldMs=10000)
    assert answer["exited"] is True
    assert answer["output"] == "".join(f"line {i}\n" for i in range(6))


async def test_the_cap_keeps_head_and_tail_and_never_cuts_a_character(client: Any) -> None:
    # 3-byte characters: whatever the budget, one of its two cuts falls inside one
    # unless both halves divide by 3; the odd sizes try both kinds.
    for max_bytes in (256, 257, 301):
        record = await start(client, argv=["python3", "-c",
                                           "import sys; sys.stdout.write('\u20ac' * 4000 + '\\n')"])
        await wait_idle(client, record["id"])
        answer = await poll(client, record["id"], maxBytes=max_bytes)
        output = answer["output"]
        assert answer["truncated"] is True and answer["exited"] is True
        assert len(output.encode()) <= max_bytes
        assert "\ufffd" not in output
        head, omitted, tail = MARKER.split(output)
        assert set(head.rstrip("\n")) == {"\u20ac"} and set(tail.rstrip("\n")) == {"\u20ac"}
        assert tail.endswith("\n")
        shown = len(head.rstrip("\n").encode()) + len(tail.encode())
        assert int(omitted) + shown == 4000 * 3 + 1
        assert (await poll(client, record["id"], maxBytes=max_bytes))["output"] == ""


async def test_a_character_not_complete_yet_waits_for_the_next_poll(client: Any) -> None:
    script = ("import sys, time\n"
              "out = sys.stdout.buffer\n"
              "out.write(b'ab\\xe2\\x82'); out.flush()\n"
              "sys.stdin.readline()\n"
              "out.write(b'\\xac\\n'); out.flush()\n")
    record = await start(client, argv=["python3", "-c", script], stdin="pipe")
    await async_wait_for(lambda: printed(client, record["id"], "ab"), what="the first bytes")
    assert (await poll(client, record["id"], yieldMs=250))["output"] == "ab"
    answer = await poll(client, record["id"], yieldMs=10000, input="\n")
    assert answer["output"] == "\u20ac\n" and answer["exited"] is True


async def test_a_head_and_tail_of_a_large_output_are_read_not_all_of_it(client: Any) -> None:
    script = ("import sys\n"
              "sys.stdout.write('start\\n' + 'x' * 3_000_000 + '\\n')\n"
              "sys.stderr.write('y' * 3_000_000 + '\\nend\\n')\n")
    record = await start(client, argv=["python3", "-c", script])
    await wait_idle(client, record["id"])
    answer = await poll(client, record["id"], maxBytes=1000)
    head, omitted, tail = MARKER.split(answer["output"])
    assert head.startswith("start\nxxx") and tail.endswith("yyy\nend\n")
    assert int(omitted) + len(head.rstrip("\n")) + len(tail) == 6_000_000 + len("start\n\n\nend\n")
    assert len(answer["output"].encode()) <= 1000


async def test_poll_answers_in_the_api_s_words(client: Any) -> None:
    record = await start(client, argv=["sleep", "300"])
    process_id = record["id"]
    for body, message in [({"yieldMs": 100}, "'yieldMs' must be an integer from 250 to 30000"),
                          ({"yieldMs": 30001}, "'yieldMs' must be an integer from 250 to 30000"),
                          ({"maxBytes": 255}, "'maxBytes' must be an integer from 256 to 1048576"),
                          ({"maxBytes": "9"}, "'maxBytes' must be an integer from 256 to 1048576"),
                          ({"consumer": "a/b"}, "'consumer' must be 1 to 128 of the characters"),
                          ({"input": 5}, "'input' must be a string"),
                          ({"wait": 1}, "unknown field 'wait'")]:
        response = await client.post(f"/processes/{process_id}/poll", json=body)
        assert response.status == 400, body
        assert (await response.json())["error"].startswith(message)
    response = await client.post(f"/processes/{process_id}/poll", json={"input": "x"})
    assert response.status == 409      # no stdin pipe
    response = await client.post("/processes/999999/poll", json={})
    assert response.status == 404
    response = await client.post("/processes", json={"argv": ["true"], "yieldMs": 5})
    assert response.status == 400
    await kill(client, process_id)


async def test_a_deleted_record_takes_its_cursors_with_it(client: Any) -> None:
    record = await start(client, command="echo x")
    await poll(client, record["id"], yieldMs=5000, consumer="c")
    assert (await client.delete(f"/processes/{record['id']}")).status == 204
    assert (await client.post(f"/processes/{record['id']}/poll", json={})).status == 404
    assert (record["id"], "c") not in client.supervisor._polls._cursors


# --- the plain environment ----------------------------------------------------------

def _env_of(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


async def _started_env(client: Any, **body: Any) -> dict[str, str]:
    response = await client.post("/processes", json={"argv": ["env"], "yieldMs": 10000, **body})
    assert response.status == 201, await response.text()
    answer = await response.json()
    assert answer["poll"]["exited"] is True
    return _env_of(answer["poll"]["output"])


async def test_children_get_a_plain_environment_unless_told_otherwise(client: Any) -> None:
    env = await _started_env(client)
    assert {k: env.get(k) for k in ("NO_COLOR", "TERM", "PAGER", "GIT_PAGER")} == \
        {"NO_COLOR": "1", "TERM": "dumb", "PAGER": "cat", "GIT_PAGER": "cat"}
    env = await _started_env(client, env={"TERM": "vt100", "PAGER": "less"})
    assert (env["TERM"], env["PAGER"], env["NO_COLOR"], env["GIT_PAGER"]) == ("vt100", "less", "1", "cat")
    env = await _started_env(client, plainEnv=False)
    for name in ("NO_COLOR", "TERM", "PAGER", "GIT_PAGER"):
        assert env.get(name) == os.environ.get(name)     # the daemon's own, as before
    response = await client.post("/processes", json={"argv": ["env"], "plainEnv": "no"})
    assert response.status == 400


async def test_a_terminal_gets_a_terminal_s_term(client: Any) -> None:
    response = await client.post("/processes", json={
        "command": "echo TERM=$TERM", "tty": {"rows": 24, "cols": 80}, "yieldMs": 10000})
    assert response.status == 201, await response.text()
    answer = await response.json()
    assert "TERM=xterm-256color" in answer["poll"]["output"]
