"""``stablehand mcp``'s command line. Light on purpose: building the parser must not import
the MCP SDK (every ``stablehand`` command builds it); :func:`run_mcp` imports
:mod:`daemon.mcp_server` only when the command is ``mcp``.

``--lease-seconds`` is for tests and for hosts that stall for long: it is left
out of ``--help`` and documented in docs/agents.md.
"""

from __future__ import annotations

import argparse

from .mcp_tools import READ_ONLY, TOOLS, parse_allow


def _allow(text: str) -> frozenset[str]:
    try:
        return parse_allow(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _lease(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 1.0 <= value <= 86400.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 1 to 86400")
    return value


def add_mcp_command(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                    common: argparse.ArgumentParser) -> None:
    mcp = sub.add_parser(
        "mcp", parents=[common], help="serve the daemon's processes as MCP tools over stdio",
        description="Serve MCP over stdin/stdout for an agent host: tools to start, poll, feed, "
                    "signal, stop, list, read and wait for processes kept by the daemon. The "
                    "processes outlive this server unless --session-scoped. See docs/agents.md.")
    mcp.add_argument("--allow", type=_allow, default=frozenset(TOOLS), metavar="TOOL[,TOOL...]",
                     help=f"offer only these tools (default: all: {', '.join(TOOLS)}); read-only: "
                          f"{','.join(name for name in TOOLS if name in READ_ONLY)}")
    mcp.add_argument("--session-scoped", action="store_true",
                     help="tie what this session starts to it: leases renewed while it lasts, "
                          "stopped when it ends or its host dies")
    mcp.add_argument("--clean-env", action="store_true",
                     help="send none of this server's environment with a start, only the tool's env")
    mcp.add_argument("--lease-seconds", type=_lease, default=None, help=argparse.SUPPRESS)


def run_mcp(args: argparse.Namespace) -> int:
    from .mcp_server import run
    return run(args)
