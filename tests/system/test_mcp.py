"""`stablehand mcp` as an agent host runs it: the `mcp` SDK's own stdio client spawning
`python -m daemon mcp --socket ...` against a real daemon (issue 20, MCP and lifetimes)."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest
from mcp import Client as McpClient
from mcp import StdioServerParameters

from daemon.client import Client
from tests.helpers import alive, async_wait_for, wait_for

REPO = Path(__file__).resolve().parents[2]
ALL_TOOLS = ["start_process", "poll_process", "write_stdin", "send_signal", "stop_process",
             "list_processes", "read_output", "wait_process"]
READ_ONLY = ["list_processes", "read_output", "poll_process", "wait_process"]


@pytest.fixture
def live(daemon: Any) -> Any:
    return daemon("--grace", "2").start()


def _params(d: Any, *extra: str, cwd: Path = REPO, env: dict[str, str] | None = None
            ) -> StdioServerParameters:
    """The host's view: `python -m daemon mcp --socket ...`, spawned in ``cwd`` (the package is
    importable from there through PYTHONPATH) with the SDK's default environment plus ``env``."""
    return StdioServerParameters(command=sys.executable,
                                 args=["-m", "daemon", "mcp", "--socket", str(d.socket_path), *extra],
                                 cwd=str(cwd), env={"PYTHONPATH": str(REPO), **(env or {})})


@asynccontextmanager
async def mcp_session(d: Any, *extra: str, cwd: Path = REPO,
                      env: dict[str, str] | None = None) -> AsyncIterator[McpClient]:
    async with McpClient(_params(d, *extra, cwd=cwd, env=env), read_timeout_seconds=60) as client:
        yield client


def _text(result: Any) -> str:
    return "".join(block.text for block in result.content if block.type == "text")


async def _call(client: McpClient, name: str, **arguments: Any) -> Any:
    result = await client.call_tool(name, arguments)
    assert not result.is_error, _text(result)
    return result


async def _poll_until(client: McpClient, process_id: int, text: str, seen: str = "",
                      timeout: float = 15.0) -> str:
    """Poll (each call waiting server-side) until the output seen so far (``seen``: what an
    earlier call returned) holds ``text``."""
    seen_parts = [seen]
    if text in seen:
        return seen

    async def arrived() -> bool:
        result = await _call(client, "poll_process", id=process_id, yield_ms=250)
        seen_parts.append(result.structured_content["output"])
        return text in "".join(seen_parts)
    await async_wait_for(arrived, timeout, f"{text!r} in the output of process {process_id}")
    return "".join(seen_parts)


def _mcp_server_pid() -> int:
    """The `stablehand mcp` child the SDK's stdio client spawned from this test process."""
    found = [p.pid for p in psutil.Process().children(recursive=True)
             if "mcp" in p.cmdline() and "daemon" in p.cmdline()]
    assert len(found) == 1, found
    return found[0]


async def test_the_host_lists_every_tool_with_a_description_and_a_schema(live: Any) -> None:
    async with mcp_session(live) as client:
        tools = (await client.list_tools()).tools
    assert [tool.name for tool in tools] == ALL_TOOLS
    for tool in tools:
        assert tool.description and len(tool.description) > 40, tool.name
        assert tool.input_schema["type"] == "object"
        assert tool.input_schema["additionalProperties"] is False
    by_name = {tool.name: tool for tool in tools}
    start = by_name["start_process"].input_schema["properties"]
    assert {"argv", "command", "cwd", "env", "name", "timeout", "tty", "yield_ms", "max_bytes"} <= set(start)
    assert by_name["poll_process"].input_schema["required"] == ["id"]
    assert by_name["list_processes"].annotations.read_only_hint is True
    assert by_name["stop_process"].annotations.destructive_hint is True


async def test_start_poll_stop(live: Any, tmp_path: Path) -> None:
    script = "import time\nprint('ready', flush=True)\nwhile True:\n    time.sleep(0.05)\n"
    async with mcp_session(live) as client:
        started = await _call(client, "start_process", argv=["python3", "-c", script],
                              cwd=str(tmp_path), yield_ms=250)
        data = started.structured_content
        process_id, pid = data["id"], data["pid"]
        assert _text(started).startswith(f"started process {process_id}: ")
        assert alive(pid)
        await _poll_until(client, process_id, "ready", data["output"])

        # The poll's cursor moved past what was returned: nothing new now.
        again = await _call(client, "poll_process", id=process_id, yield_ms=250)
        assert again.structured_content["output"] == ""
        assert again.structured_content["exited"] is False
        assert "(no new output)" in _text(again)

        listed = await _call(client, "list_processes", state="running")
        assert process_id in [p["id"] for p in listed.structured_content["processes"]]

        stopped = await _call(client, "stop_process", id=process_id)
        assert stopped.structured_content["state"] == "idle"
        assert stopped.structured_content["exitState"] == "canceled"
        assert "killed by SIGTERM" in _text(stopped) and "ready" in _text(stopped)
    wait_for(lambda: not alive(pid), 10, "the stopped process to be gone")
    with Client(socket_path=live.socket_path) as sh:
        assert sh.get(process_id)["state"] == "idle"


async def test_write_stdin_read_output_and_wait(live: Any) -> None:
    echo = ("import sys\nfor line in sys.stdin:\n    print('got ' + line.strip(), flush=True)\n"
            "print('é' * 3000)\n")
    async with mcp_session(live) as client:
        started = await _call(client, "start_process", argv=["python3", "-c", echo], stdin=True,
                              yield_ms=0)
        process_id = started.structured_content["id"]
        assert started.structured_content["state"] in ("queued", "running")

        wrote = await _call(client, "write_stdin", id=process_id, input="hello\n")
        await _poll_until(client, process_id, "got hello", wrote.structured_content["output"])

        closed = await _call(client, "write_stdin", id=process_id, input="last\n", close_stdin=True)
        assert closed.structured_content["state"] in ("running", "terminating", "idle")
        waited = await _call(client, "wait_process", id=process_id, timeout=20)
        assert waited.structured_content["exitCode"] == 0
        assert "exit code 0" in _text(waited) and "got last" in _text(waited)

        # A byte range, cut inside a two-byte character at both ends: whole characters only,
        # and the offset to continue from.
        whole = await _call(client, "read_output", id=process_id)
        end = whole.structured_content["end"]
        assert whole.structured_content["text"].startswith("got hello\ngot last\n")
        # "got hello\ngot last\n" is 19 bytes: each "é" (2 bytes) starts at an odd offset.
        middle = await _call(client, "read_output", id=process_id, offset=20, limit=100)
        piece = middle.structured_content
        assert piece["offset"] == 21 and piece["next"] == 119 and piece["text"] == "é" * 49
        assert "continue with offset 119" in _text(middle)
        tail = await _call(client, "read_output", id=process_id, tail_bytes=7)
        assert tail.structured_content["text"] == "ééé\n" and tail.structured_content["next"] == end


async def test_it_runs_where_the_host_started_the_server_with_plain_output(live: Any,
                                                                         tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    show = ("import os; print(os.getcwd()); print(*(os.environ.get(k) for k in ('CALLER_VAR', "
            "'TERM', 'PAGER', 'STABLEHAND_EXTRA', 'TOOL_VAR')))")
    host_env = {"CALLER_VAR": "from-host", "TERM": "xterm-256color", "PAGER": "less",
                "STABLEHAND_EXTRA": "x"}
    async with mcp_session(live, cwd=tmp_path, env=host_env) as client:
        here = await _call(client, "start_process", argv=["python3", "-c", show], yield_ms=5000)
        assert here.structured_content["exited"], _text(here)
        assert here.structured_content["output"] == f"{tmp_path}\nfrom-host dumb cat None None\n"
        sub = await _call(client, "start_process", argv=["python3", "-c", show], cwd="sub",
                          env={"TOOL_VAR": "t", "PAGER": "more"}, yield_ms=5000)
        assert sub.structured_content["output"] == f"{tmp_path / 'sub'}\nfrom-host dumb more None t\n"
    async with mcp_session(live, "--clean-env", cwd=tmp_path, env=host_env) as client:
        clean = await _call(client, "start_process", argv=["python3", "-c", show], yield_ms=5000)
        assert clean.structured_content["output"] == f"{tmp_path}\nNone dumb cat None None\n"


async def test_a_terminal_program_driven_by_keystrokes(live: Any) -> None:
    async with mcp_session(live) as client:
        started = await _call(client, "start_process", argv=["sh", "-i"], tty=True, yield_ms=250)
        process_id = started.structured_content["id"]
        wrote = await _call(client, "write_stdin", id=process_id, input="echo $((6*7))\n")
        await _poll_until(client, process_id, "42", wrote.structured_content["output"])
        # Ctrl-C interrupts what runs in the terminal, not the shell.
        await _call(client, "write_stdin", id=process_id, input="sleep 100\n", yield_ms=250)
        await _call(client, "write_stdin", id=process_id, input="\u0003", yield_ms=250)
        wrote = await _call(client, "write_stdin", id=process_id, input="echo after-$((1+1))\n")
        await _poll_until(client, process_id, "after-2", wrote.structured_content["output"])
        await _call(client, "write_stdin", id=process_id, input="exit 5\n", yield_ms=250)
        waited = await _call(client, "wait_process", id=process_id, timeout=20)
        assert waited.structured_content["exitCode"] == 5, _text(waited)


async def test_allow_hides_the_other_tools(live: Any) -> None:
    async with mcp_session(live, "--allow", ",".join(READ_ONLY)) as client:
        names = [tool.name for tool in (await client.list_tools()).tools]
        assert sorted(names) == sorted(READ_ONLY)
        refused = await client.call_tool("start_process", {"command": "touch /tmp/never"})
        assert refused.is_error and "unknown tool 'start_process'" in _text(refused)
        assert (await client.call_tool("list_processes", {})).is_error is False


async def test_over_tcp_with_the_token_file(live: Any) -> None:
    params = StdioServerParameters(
        command=sys.executable, cwd=str(REPO), env={"PYTHONPATH": str(REPO)},
        args=["-m", "daemon", "mcp", "--url", live.url, "--token-file", str(live.state_dir / "token")])
    async with McpClient(params, read_timeout_seconds=60) as client:
        started = await _call(client, "start_process", command="echo over tcp", yield_ms=5000)
        assert started.structured_content["output"] == "over tcp\n"
    wrong = StdioServerParameters(command=sys.executable, cwd=str(REPO), env={"PYTHONPATH": str(REPO)},
                                  args=["-m", "daemon", "mcp", "--url", live.url, "--token-file", "none"])
    async with McpClient(wrong, read_timeout_seconds=60) as client:
        refused = await client.call_tool("list_processes", {})
        assert refused.is_error and "HTTP 401" in _text(refused)


async def test_no_daemon_is_a_tool_error_that_says_how_to_start_one(tmp_path: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable, cwd=str(REPO), env={"PYTHONPATH": str(REPO)},
        args=["-m", "daemon", "mcp", "--socket", str(tmp_path / "nobody.sock")])
    async with McpClient(params, read_timeout_seconds=60) as client:
        assert len((await client.list_tools()).tools) == len(ALL_TOOLS)
        result = await client.call_tool("list_processes", {})
    assert result.is_error and "no Stablehand daemon answers" in _text(result)
    assert "stablehand serve" in _text(result)


def test_allow_refuses_an_unknown_tool_name(live: Any) -> None:
    import subprocess
    result = subprocess.run([sys.executable, "-m", "daemon", "mcp", "--socket", str(live.socket_path),
                             "--allow", "list_processes,rm_rf"], capture_output=True, text=True,
                            timeout=30, cwd=REPO)
    assert result.returncode == 2 and "unknown tool 'rm_rf'" in result.stderr


async def test_errors_come_back_as_tool_errors(live: Any, tmp_path: Path) -> None:
    async with mcp_session(live) as client:
        missing = await client.call_tool("poll_process", {"id": 999999})
        assert missing.is_error and "999999" in _text(missing) and "HTTP 404" in _text(missing)

        bad = await client.call_tool("start_process", {"argv": "ls"})
        assert bad.is_error and "invalid arguments for start_process: argv" in _text(bad)
        both = await client.call_tool("start_process", {"argv": ["true"], "command": "true"})
        assert both.is_error and "exactly one of argv" in _text(both)

        nothing = await client.call_tool("start_process", {"argv": [str(tmp_path / "no-such-program")],
                                                           "yield_ms": 0})
        assert nothing.is_error and "failed to start" in _text(nothing)
        assert "no-such-program" in _text(nothing)

        # The process ended: signalling it is a conflict, and its last lines say why it ended.
        done = await _call(client, "start_process",
                           command="echo 'config file missing' >&2; exit 3", yield_ms=0)
        process_id = done.structured_content["id"]
        await _call(client, "wait_process", id=process_id, timeout=20)
        late = await client.call_tool("send_signal", {"id": process_id, "signal": "SIGINT"})
        assert late.is_error and "not running" in _text(late) and "HTTP 409" in _text(late)
        assert "config file missing" in _text(late)


async def test_without_session_scope_processes_outlive_the_host(live: Any) -> None:
    async with mcp_session(live) as client:
        started = await _call(client, "start_process", argv=["sleep", "300"], yield_ms=0)
        process_id, pid = started.structured_content["id"], started.structured_content["pid"]
    # The host closed the session and the server exited: the process runs on.
    with Client(socket_path=live.socket_path) as sh:
        assert sh.wait(process_id, timeout=1)["state"] == "running" and alive(pid)
        sh.stop(process_id)
        assert sh.wait(process_id, timeout=20)["state"] == "idle"


async def test_session_scoped_host_killed_the_lease_lapses(live: Any) -> None:
    async with mcp_session(live, "--session-scoped", "--lease-seconds", "2") as client:
        started = await _call(client, "start_process", argv=["sleep", "300"], yield_ms=0)
        process_id, pid = started.structured_content["id"], started.structured_content["pid"]
        with Client(socket_path=live.socket_path) as sh:
            # Renewed while the session lives: still running well past one lease.
            assert sh.wait(process_id, timeout=5)["state"] == "running"
        os.kill(_mcp_server_pid(), signal.SIGKILL)
        with Client(socket_path=live.socket_path) as sh:
            final = sh.wait(process_id, timeout=20)
        assert final["state"] == "idle" and final["exitState"] == "canceled", final
        assert "lease" in (final.get("error") or ""), final
        wait_for(lambda: not alive(pid), 10, "the leased process to be gone")


async def test_session_scoped_clean_exit_stops_what_it_started(live: Any) -> None:
    async with mcp_session(live, "--session-scoped", "--lease-seconds", "600") as client:
        started = await _call(client, "start_process", argv=["sleep", "300"], yield_ms=0)
        process_id, pid = started.structured_content["id"], started.structured_content["pid"]
    # Long before the lease could lapse, the clean end of the session stopped it.
    with Client(socket_path=live.socket_path) as sh:
        final = sh.wait(process_id, timeout=20)
    assert final["state"] == "idle" and final["exitState"] == "canceled", final
    wait_for(lambda: not alive(pid), 10, "the process to be gone")


async def test_session_scoped_server_terminated_by_its_host_stops_what_it_started(live: Any) -> None:
    async with mcp_session(live, "--session-scoped", "--lease-seconds", "600") as client:
        started = await _call(client, "start_process", argv=["sleep", "300"], yield_ms=0)
        process_id, pid = started.structured_content["id"], started.structured_content["pid"]
        server = psutil.Process(_mcp_server_pid())
        server.terminate()
        server.wait(20)      # (the SDK's stdio client reaps it: no exit status to see here)
        with Client(socket_path=live.socket_path) as sh:
            final = sh.wait(process_id, timeout=20)
        assert final["state"] == "idle" and final["exitState"] == "canceled", final
    wait_for(lambda: not alive(pid), 10, "the process to be gone")
