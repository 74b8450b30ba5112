"""The ``stablehand`` command line: ``serve`` runs the daemon; the rest are its clients.

Client commands talk to the daemon's Unix socket by default (``--socket``,
``--url`` or $STABLEHAND_SOCKET / $STABLEHAND_URL choose another), print human
tables, or JSON with ``--json``.

Exit codes: ``serve``: 0 clean stop, 78 (EX_CONFIG) for a bad setting (the
message names it), 1 when the daemon cannot start otherwise. Clients: 0 done,
1 the daemon answered with an error (printed), 2 a bad command line, 69
(EX_UNAVAILABLE) no daemon answered or it went away during ``logs -f``,
``events`` or ``run --wait``; ``run`` exits 1 when the program could not be
started (the error is printed); ``wait`` and ``run --wait`` exit with the
child's own exit code (128+N when signal N ended it, 1 when it failed without
one), 130 when a third Ctrl-C leaves ``run --wait`` early.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

# Nothing heavy at module level: `stablehand keeper` must run on the standard library
# alone (no structlog, aiohttp, aiosqlite, psutil), so `serve` imports its own needs.


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="run the daemon in the foreground (systemd's way)")
    serve.add_argument("--config", metavar="FILE", help="TOML config file")
    serve.add_argument("--listen", metavar="HOST:PORT",
                       help="TCP address (default 127.0.0.1:9371; 'none' turns TCP off)")
    serve.add_argument("--socket", metavar="PATH", help="Unix socket path ('none' turns it off)")
    serve.add_argument("--state-dir", metavar="DIR", help="where the SQLite registry and output live")
    serve.add_argument("--token-file", metavar="FILE",
                       help="file holding the API bearer token (default: <state dir>/token, made on "
                            "first start; 'none': no token, loopback only)")
    serve.add_argument("--max-concurrent", metavar="N", help="running children at once (0 = no limit)")
    serve.add_argument("--grace", metavar="SECONDS", help="default seconds between SIGTERM and SIGKILL (10)")
    serve.add_argument("--shutdown", metavar="MODE", help="on SIGTERM: 'stop' children (default) or 'detach'")
    serve.add_argument("--log-format", metavar="FORMAT", help="auto, json or console")
    serve.add_argument("--log-level", metavar="LEVEL", help="debug, info, warning or error")
    serve.add_argument("--event-loop", metavar="LOOP", help="uvloop (default) or asyncio")
    serve.add_argument("--services", metavar="FILE",
                       help="a services file to apply once the daemon is ready (see `apply`)")


def build_parser(client_commands: bool = True) -> argparse.ArgumentParser:
    """The whole command line; ``client_commands=False`` leaves the client commands out (for
    ``serve``: their modules are the CLI's, and a running daemon should not carry them)."""
    from . import __version__
    parser = argparse.ArgumentParser(
        prog="stablehand", description="Stablehand process supervisor",
        epilog="exit codes: 0 done; 1 the daemon answered with an error, or `run` could not start "
               "the program; 2 bad usage; 69 no daemon answered (or it went away mid-stream); "
               "`wait` and `run --wait`: the child's own code, 128+N for signal N.")
    parser.add_argument("--version", action="version", version=f"stablehand {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _serve_parser(sub)
    sub.add_parser("keeper", help="hold the children of one state dir (the daemon starts it; "
                   "see `stablehand keeper --help`)")
    if client_commands:
        from .cli_client import add_client_commands
        add_client_commands(sub)
    return parser


def _keep_renderers_out() -> None:
    """Keep rich (and better-exceptions) out of the serving process: about 4 MiB of RSS.

    ``import structlog`` imports ``structlog.dev``, which imports rich whenever it is
    installed (it is: ``mcp`` pulls in typer, which pulls in rich), only to pick a default
    exception formatter for ``ConsoleRenderer``. The daemon never uses it: ``logs.configure``
    puts ``format_exc_info`` ahead of either renderer, so tracebacks reach ``ConsoleRenderer``
    already as plain text, and the lines are the same with or without rich. A ``None`` in
    ``sys.modules`` makes ``import rich`` raise ImportError, which structlog handles. Done in
    ``serve`` only: the client commands and ``stablehand mcp`` are other processes and may
    import what they like; a module already imported is left alone.
    """
    for name in ("rich", "better_exceptions"):
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def run_serve(args: argparse.Namespace) -> int:
    _keep_renderers_out()  # before anything imports structlog
    import asyncio

    from . import config as config_module
    from . import logs, systemd
    from .errors import StablehandError
    from .service import serve
    flags = {key: getattr(args, key) for key in config_module.SETTINGS if hasattr(args, key)}
    sd = systemd.take_environment()
    try:
        config = config_module.load(flags, config_file=args.config)
    except config_module.ConfigError as exc:
        print(f"stablehand: {exc}", file=sys.stderr)
        return config_module.EX_CONFIG
    logs.configure(config.log_format, config.log_level)
    try:
        with asyncio.Runner(loop_factory=_loop_factory(config.event_loop)) as runner:
            return runner.run(serve(config, sd))
    except config_module.ConfigError as exc:  # found at start-up: the default token file
        print(f"stablehand: {exc}", file=sys.stderr)
        return config_module.EX_CONFIG
    except StablehandError as exc:  # StartupError, RegistryError, StateDirError...
        print(f"stablehand: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop by default: it halves the event loop's cost per HTTP request (see README,
    'Performance'). The supervisor needs nothing of it: children are watched through
    pidfds, never through the loop's own child watcher or a SIGCHLD handler."""
    if name == "uvloop":
        import uvloop
        return uvloop.new_event_loop
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["keeper"]:   # before anything else is imported: see daemon/keeper
        from .keeper.main import main as keeper_main
        return keeper_main(argv[1:])
    args = build_parser(client_commands=argv[:1] != ["serve"]).parse_args(argv)
    if args.command == "serve":
        return run_serve(args)
    if args.command == "mcp":
        from .cli_mcp import run_mcp
        return run_mcp(args)
    from .cli_client import run_client
    return run_client(args)


if __name__ == "__main__":
    sys.exit(main())
