"""The CLI's client commands: run, ps, show, kill, signal, logs, wait, events, rm, token
(and, from :mod:`daemon.cli_managed`, apply, restart, runs; from :mod:`daemon.cli_stop`,
stop, of one process or many).

Over TCP the commands find the daemon's token by themselves (``--token-file``,
$STABLEHAND_TOKEN_FILE, $STABLEHAND_TOKEN, else the daemon's ``<state dir>/token``
for a loopback URL: see :func:`daemon.tokens.find`). ``stablehand token`` prints
that token, for curl and other clients.

``run`` runs where the caller is, with the caller's environment: what it sends
for ``cwd`` and ``env``, and why, is in :mod:`daemon.cli_caller`.

``ps`` lists every state, newest first, as the API does (not only the running
ones, as ``docker ps`` does: a supervisor's finished jobs are what people look
up); ``--state`` takes a state or an exit state, ``--all`` fetches every page,
and a footer on stderr says how many rows ``--limit`` left out.

Human output by default; ``--json`` (on the commands that print a record or a
table) prints the API's JSON untouched.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from . import tokens
from .cli_caller import UsageError, child_env, resolve_cwd
from .cli_format import ps_table, show_view
from .cli_managed import COMMANDS as MANAGED_COMMANDS
from .cli_managed import add_managed_commands, add_run_options, id_or_name, run_managed, run_options
from .cli_mcp import add_mcp_command
from .cli_stop import add_stop_command, run_stop
from .cli_stream import (
    EX_UNAVAILABLE,
    attach,
    exit_code_of,
    not_started_error,
    print_events,
    print_logs,
    say,
    since_argument,
)
from .client import ApiError, Client, ConnectionFailed, StreamBroken

__all__ = ["EX_UNAVAILABLE", "add_client_commands", "exit_code_of", "run_client"]

STATES = ("queued", "running", "terminating", "idle")
EXIT_STATES = ("success", "failed", "timeout", "canceled")
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000                 # the API's largest page
ID_HELP = "the process id (run and ps print it), or a managed process's name"


def add_client_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--socket", metavar="PATH",
                        help="the daemon's Unix socket (default: $STABLEHAND_SOCKET, else the "
                             "daemon's default socket if it exists, else TCP)")
    common.add_argument("--url", metavar="URL",
                        help="the daemon's TCP URL, e.g. http://127.0.0.1:9371 (default: $STABLEHAND_URL)")
    common.add_argument("--token-file", metavar="FILE",
                        help="bearer token file (default for TCP: the daemon's own, found by "
                             "itself; 'none': send no token)")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print the API's JSON record instead")

    _run_parser(sub, common)
    _ps_parser(sub, common)
    add_managed_commands(sub, common, as_json)

    sub.add_parser("show", parents=[common, as_json], help="one process record, readable"
                   ).add_argument("id", type=id_or_name, metavar="ID", help=ID_HELP)
    sub.add_parser("kill", parents=[common, as_json],
                   help="stop a process: SIGTERM to its tree, SIGKILL after its grace"
                   ).add_argument("id", type=id_or_name, metavar="ID", help=ID_HELP)
    sub.add_parser("rm", parents=[common], help="forget an idle process and its output"
                   ).add_argument("id", type=id_or_name, metavar="ID", help=ID_HELP)

    add_stop_command(sub, common, as_json, ID_HELP)

    sig = sub.add_parser("signal", parents=[common], help="deliver a signal (state unchanged)")
    sig.add_argument("id", type=id_or_name, metavar="ID", help=ID_HELP)
    sig.add_argument("signal", metavar="SIGNAL", help="a name like SIGUSR1 or HUP, or a number")
    sig.add_argument("--group", action="store_true", help="signal its whole process group")

    _logs_parser(sub, common)
    add_mcp_command(sub, common)

    wait = sub.add_parser("wait", parents=[common, as_json],
                          help="wait until idle; exit with the child's code (128+N for signal N)")
    wait.add_argument("id", type=id_or_name, metavar="ID", help=ID_HELP)
    wait.add_argument("--timeout", type=float, metavar="SECONDS",
                      help="give up after this many seconds (exit 124; default: wait forever)")

    events = sub.add_parser("events", parents=[common],
                            help="print state changes as they happen: time, id, ref, state, "
                                 "exit state, command")
    events.add_argument("--id", type=int, metavar="ID", help="only this process's changes")
    events.add_argument("--ref", metavar="REF", help="only processes with this ref")
    events.add_argument("--json", action="store_true", help="one JSON event per line instead")

    token = sub.add_parser("token", help="print the daemon's API token (from <state dir>/token)")
    token.add_argument("--state-dir", metavar="DIR",
                       help="the daemon's state dir (default: $STABLEHAND_STATE_DIR, else the "
                            "daemon's default)")


def _run_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                common: argparse.ArgumentParser) -> None:
    run = sub.add_parser(
        "run", parents=[common], help="start a process here: run [options] -- CMD ARGS...",
        description="Start CMD under the daemon, in this directory with this environment; "
                    "print its id. With --wait (or -a) stream its stdout and stderr here and "
                    "exit with its code: Ctrl-C sends it SIGINT, a second Ctrl-C stops it.")
    run.add_argument("--ref", metavar="REF", help="a name of your own for it (ps and events filter by it)")
    run.add_argument("--timeout", type=float, metavar="SECONDS",
                     help="stop it after this many seconds (exit state 'timeout')")
    run.add_argument("--grace", type=float, metavar="SECONDS",
                     help="seconds between SIGTERM and SIGKILL when it is stopped (default: the daemon's)")
    run.add_argument("--cwd", metavar="DIR",
                     help="working directory (default: this one; a relative DIR is taken from here)")
    run.add_argument("--env", action="append", default=[], metavar="KEY[=VALUE]",
                     help="set KEY=VALUE, or pass this shell's KEY (an error if it is unset); repeatable")
    run.add_argument("--clean-env", action="store_true",
                     help="send none of this shell's environment, only --env (the child still has "
                          "the daemon's own)")
    run.add_argument("--wait", "-a", "--attach", dest="attach", action="store_true",
                     help="stream its stdout and stderr here until it ends, then exit with its code "
                          "(the id goes to stderr)")
    run.add_argument("--json", action="store_true",
                     help="print the record as JSON (with --wait: the final record; no output streamed)")
    add_run_options(run)
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ARGS",
                     help="the program and its arguments")


def _ps_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser],
               common: argparse.ArgumentParser) -> None:
    ps = sub.add_parser(
        "ps", parents=[common], help="list processes, newest first",
        description="List processes, newest first: ID, REF, STATE, EXIT (exit code, signal, or "
                    "why it failed), AGE/DURATION (queued: since created; running: since started; "
                    "idle: how long it ran), COMMAND (cut to the terminal's width).")
    ps.add_argument("--state", choices=STATES + EXIT_STATES, metavar="STATE",
                    help="only this state (queued, running, terminating, idle) or exit state "
                         "(success, failed, timeout, canceled)")
    ps.add_argument("--ref", metavar="REF", help="only processes with this ref")
    ps.add_argument("--limit", type=int, metavar="N",
                    help=f"at most N rows (default {DEFAULT_LIMIT}, at most {MAX_LIMIT})")
    ps.add_argument("--cursor", metavar="ID", help="start below this id (the footer gives it)")
    ps.add_argument("--all", action="store_true", help="every matching process, all pages")
    ps.add_argument("--json", action="store_true",
                    help='print the API\'s page as JSON: {"processes": [...], "next": ...}')


def _logs_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                 common: argparse.ArgumentParser) -> None:
    logs = sub.add_parser(
        "logs", parents=[common], help="print a process's captured stdout and stderr",
        description="Print a process's captured output: both streams, each to its own fd, "
                    "in the order their lines arrived (the arrival times the daemon records); "
                    "one stream picked alone goes to stdout.")
    which = logs.add_mutually_exclusive_group()
    which.add_argument("--stdout", action="store_true", help="only its stdout")
    which.add_argument("--stderr", action="store_true", help="only its stderr (printed to stdout)")
    logs.add_argument("id", type=id_or_name, metavar="ID", help=ID_HELP)
    logs.add_argument("-f", "--follow", action="store_true",
                      help="keep printing until it is idle; starts from the last 10 lines "
                           "(or at --since)")
    start = logs.add_mutually_exclusive_group()
    start.add_argument("--tail", type=int, metavar="N", help="only the last N lines of each stream")
    start.add_argument("--from-start", action="store_true", help="with -f: replay everything first")
    logs.add_argument("--since", metavar="WHEN",
                      help="only output that arrived at or after WHEN: a duration ago (30s, 10m, "
                           "1h30m, 2d), an RFC 3339 time (2026-12-03T13:10:49Z) or unix seconds; "
                           "with -f, the follow starts there")
    logs.add_argument("-t", "--timestamps", action="store_true",
                      help="print each line's arrival time first (RFC 3339, UTC, milliseconds)")


def _client(args: argparse.Namespace) -> Client:
    return Client(socket_path=args.socket, url=args.url, token_file=args.token_file)


def print_token(args: argparse.Namespace) -> int:
    path = (Path(args.state_dir).expanduser() / tokens.FILE_NAME if args.state_dir
            else tokens.default_token_path(os.environ))
    try:
        print(tokens.read_plain(path))
    except FileNotFoundError:
        say(f"no token at {path}: the daemon creates it on its first start (`stablehand serve`); "
            "a daemon started with --token-file uses that file instead")
        return 1
    except OSError as exc:
        say(f"cannot read {path}: {exc.strerror} (it is the daemon user's: run this as that user)")
        return 1
    except tokens.TokenFileError as exc:
        say(str(exc))
        return 1
    return 0


def run_client(args: argparse.Namespace) -> int:
    if args.command == "token":
        return print_token(args)
    try:
        client = _client(args)
    except OSError as exc:
        say(f"cannot read token file {exc.filename}: {exc.strerror}")
        return 1
    except tokens.TokenFileError as exc:
        say(str(exc))
        return 1
    try:
        return _dispatch(args, client)
    except UsageError as exc:
        say(str(exc))
        return 2
    except StreamBroken as exc:
        say(str(exc))
        return EX_UNAVAILABLE
    except ConnectionFailed as exc:
        say(str(exc))
        return EX_UNAVAILABLE
    except ApiError as exc:
        say(f"{exc.message} (HTTP {exc.status})")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        return 0


def _quiet_stdout() -> None:
    """After a closed pipe (``stablehand logs 1 | head``), keep the interpreter's final flush
    from printing a traceback."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _dispatch(args: argparse.Namespace, client: Client) -> int:
    command = args.command
    if command == "run":
        return _run(args, client)
    if command == "ps":
        return _ps(args, client)
    if command in MANAGED_COMMANDS:
        return run_managed(args, client)
    if command == "show":
        record = client.get(args.id)
        if args.json:
            _print_json(record)
        else:
            print(show_view(record, dt.datetime.now(dt.UTC)))
        return 0
    if command == "stop":
        return run_stop(args, client)
    if command == "kill":
        record = client.kill(args.id)
        if args.json:
            _print_json(record)
        else:
            print(f"{args.id} {record['state']}")
        return 0
    if command == "signal":
        signal_value: str | int = int(args.signal) if args.signal.isdigit() else args.signal
        client.signal(args.id, signal_value, group=args.group)
        return 0
    if command == "rm":
        client.delete(args.id)
        return 0
    if command == "logs":
        streams = ["stdout"] if args.stdout else ["stderr"] if args.stderr else ["stdout", "stderr"]
        if args.tail is not None and args.tail < 0:
            raise UsageError("--tail needs a number of lines, 0 or more")
        if args.from_start and not args.follow:
            raise UsageError("--from-start goes with -f (without -f everything is printed)")
        if args.from_start and args.since is not None:
            raise UsageError("--from-start replays everything: leave out --since")
        try:
            since = None if args.since is None else since_argument(args.since, time.time())
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        return print_logs(client, args.id, streams, args.tail, args.follow, args.from_start,
                          since, args.timestamps)
    if command == "wait":
        record = client.wait(args.id, args.timeout)
        if args.json:
            _print_json(record)
        return exit_code_of(record)
    if command == "events":
        return print_events(client, args.id, args.ref, args.json)
    return 2


# --- run ---------------------------------------------------------------------------------------

def _run(args: argparse.Namespace, client: Client) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise UsageError("run needs a command: stablehand run [options] -- CMD ARGS...")
    cwd = resolve_cwd(args.cwd, os.environ)
    env = child_env(args.env, args.clean_env, os.environ, cwd)
    record = client.start(argv, ref=args.ref, timeout=args.timeout, grace=args.grace, cwd=cwd,
                          env=env or None, **run_options(args))
    process_id = record["id"]
    error = not_started_error(record)
    if not args.attach or error is not None:
        if args.json:
            _print_json(record)
        elif not args.attach:
            print(process_id, flush=True)
        if error is not None:
            say(f"process {process_id} failed: {error}")
            return exit_code_of(record)
        return 0
    say(f"process {process_id} {record['state']}")
    try:
        code, final = attach(client, record, stream_output=not args.json)
    except ConnectionFailed as exc:
        say(f"lost the daemon while waiting for process {process_id} ({exc}); it may still be running")
        return EX_UNAVAILABLE
    if args.json and final is not None:
        _print_json(final)
    return code


# --- ps ------------------------------------------------------------------------------------------

def _ps(args: argparse.Namespace, client: Client) -> int:
    if args.all and (args.limit is not None or args.cursor is not None):
        raise UsageError("--all lists every page: it goes without --limit and --cursor")
    limit = DEFAULT_LIMIT if args.limit is None else args.limit
    if not 1 <= limit <= MAX_LIMIT:
        raise UsageError(f"--limit must be 1 to {MAX_LIMIT}")
    filters: dict[str, Any] = {"ref": args.ref}
    if args.state in EXIT_STATES:
        filters["exit_state"] = args.state
    else:
        filters["state"] = args.state
    if args.all:
        records: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = client.list(limit=MAX_LIMIT, cursor=cursor, **filters)
            records += page["processes"]
            if not (cursor := page.get("next")):
                break
        page = {"processes": records, "next": None}
    else:
        page = client.list(limit=limit, cursor=args.cursor, **filters)
    if args.json:
        _print_json(page)
        return 0
    width = shutil.get_terminal_size((0, 0)).columns if sys.stdout.isatty() or "COLUMNS" in os.environ \
        else 0
    print(ps_table(page["processes"], dt.datetime.now(dt.UTC), width or None), flush=True)
    if page.get("next"):
        rest = client.list(limit=MAX_LIMIT, cursor=page["next"], **filters)
        count = f"{len(rest['processes'])}{'+' if rest.get('next') else ''}"
        print(f"{count} more; use --limit N, --cursor {page['next']} or --all", file=sys.stderr)
    return 0
