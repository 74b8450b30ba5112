"""``stablehand mcp``: the daemon's processes as MCP tools, served over stdio.

A thin client: the server holds no process of its own. Every tool is a call
to the daemon (:mod:`daemon.mcp_actions` over :class:`daemon.client.Client`,
on the Unix socket by default), so when the host exits -- or kills this
server -- the processes go on under the daemon, unless the session was
started ``--session-scoped``: then each start carries a lease this server
renews every third of its length while the session lasts, a clean end of the
session stops them at once, and a host that dies leaves them to be stopped by
the daemon when their leases lapse (``--lease-seconds``, 30 by default, is
there for tests and for hosts that stall for long). A SIGTERM, SIGHUP or SIGINT
counts as a clean end: the processes are stopped, then the server dies of the signal.

Built on the official ``mcp`` SDK's low-level server, so the tools' JSON
schemas are ours, written in :mod:`daemon.mcp_tools`; every call is checked
against its schema here (the SDK does not) and the answer goes back as text
plus ``structuredContent``, with ``isError`` for anything that went wrong --
the daemon's message, or a bad argument -- so the model sees it and can retry.
``--allow`` hides the tools it does not name: they are neither listed nor
callable.

The SDK's stdio transport points fd 1 at stderr while it serves, so nothing a
handler prints can corrupt the protocol stream; diagnostics go to stderr.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Iterable
from typing import Any

import anyio
import anyio.to_thread
import mcp_types as types
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

from . import __version__, tokens
from .client import Client
from .mcp_actions import Actions, Outcome
from .mcp_tools import TOOLS

DEFAULT_LEASE = 30.0
RELEASE_TIMEOUT = 10.0   # seconds a session's end spends stopping what it started
INSTRUCTIONS = (
    "Run and supervise processes through the Stablehand daemon. start_process returns an id and "
    "the first output; poll_process returns output since your last poll; write_stdin types into "
    "a process; wait_process waits for the end; stop_process ends it. Processes are kept by the "
    "daemon, not by this session.")


def _tool(name: str) -> types.Tool:
    spec = TOOLS[name]
    return types.Tool(name=name, description=spec.description, input_schema=spec.schema,
                      annotations=types.ToolAnnotations(read_only_hint=spec.read_only,
                                                        destructive_hint=spec.destructive,
                                                        open_world_hint=False))


def _result(outcome: Outcome) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=outcome.text)],
                                structured_content=outcome.data, is_error=outcome.error)


def bad_arguments(name: str, arguments: dict[str, Any]) -> str | None:
    """What is wrong with a call's arguments, or None when its schema accepts them."""
    error = next(iter(sorted(Draft202012Validator(TOOLS[name].schema).iter_errors(arguments),
                             key=lambda e: list(e.path))), None)
    if error is None:
        return None
    where = ".".join(str(part) for part in error.path)
    return f"invalid arguments for {name}: {f'{where}: ' if where else ''}{error.message}"


def build_server(actions: Actions, allowed: Iterable[str]) -> Server[Any]:
    """The MCP server offering the ``allowed`` tools (in :data:`TOOLS`' order) over ``actions``."""
    names = [name for name in TOOLS if name in set(allowed)]
    tools = [_tool(name) for name in names]

    async def list_tools(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        arguments = params.arguments or {}
        if params.name not in names:
            return _result(Outcome(f"unknown tool {params.name!r} (this server offers: "
                                   f"{', '.join(names)})", error=True))
        problem = bad_arguments(params.name, arguments)
        if problem is not None:
            return _result(Outcome(problem, {"error": problem}, error=True))
        outcome = await anyio.to_thread.run_sync(actions.call, params.name, arguments,
                                                 abandon_on_cancel=True)
        return _result(outcome)

    return Server("stablehand", version=__version__, instructions=INSTRUCTIONS,
                  on_list_tools=list_tools, on_call_tool=call_tool)


async def _renew(actions: Actions, interval: float) -> None:
    while True:
        await anyio.sleep(interval)
        await anyio.to_thread.run_sync(actions.renew_leases, abandon_on_cancel=True)


async def _release(actions: Actions) -> None:
    with anyio.move_on_after(RELEASE_TIMEOUT, shield=True):
        await anyio.to_thread.run_sync(actions.release, abandon_on_cancel=True)


async def _release_on_signal(actions: Actions) -> None:
    """SIGTERM, SIGHUP or SIGINT (a host ending the session by signal): release the session's
    processes, then die of that signal as the host expects. (Cancelling the session instead
    could hang: the SDK reads stdin in a thread that only the host closing it ends.)"""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP, signal.SIGINT) as received:
        async for number in received:
            await _release(actions)
            signal.signal(number, signal.SIG_DFL)
            os.kill(os.getpid(), number)


async def serve(actions: Actions, allowed: Iterable[str]) -> None:
    """Serve one MCP session on stdin/stdout until the host closes it."""
    server = build_server(actions, allowed)
    async with stdio_server() as (read_stream, write_stream):
        async with anyio.create_task_group() as group:
            if actions.lease is not None:
                group.start_soon(_renew, actions, actions.lease / 3)
                group.start_soon(_release_on_signal, actions)
            await server.run(read_stream, write_stream, server.create_initialization_options())
            group.cancel_scope.cancel()
    if actions.lease is not None:
        await _release(actions)


def run(args: argparse.Namespace) -> int:
    """``stablehand mcp``'s body (argparse has checked ``--allow``); 1 for a token it cannot read."""
    try:
        client = Client(socket_path=args.socket, url=args.url, token_file=args.token_file)
    except OSError as exc:
        print(f"stablehand mcp: cannot read token file {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    except tokens.TokenFileError as exc:
        print(f"stablehand mcp: {exc}", file=sys.stderr)
        return 1
    lease = (args.lease_seconds or DEFAULT_LEASE) if args.session_scoped else None
    actions = Actions(client, lease=lease, clean_env=args.clean_env)
    try:
        anyio.run(serve, actions, args.allow)
    except KeyboardInterrupt:
        pass
    return 0
