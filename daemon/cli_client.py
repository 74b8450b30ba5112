"""The CLI's client commands: run, ps, show, kill, stop, signal, logs, wait, events, rm, token.

Over TCP the commands find the daemon's token by themselves (``--token-file``,
$STABLEHAND_TOKEN_FILE, $STABLEHAND_TOKEN, else the daemon's ``<state dir>/token``
for a loopback URL: see :func:`daemon.tokens.find`). ``stablehand token`` prints
that token, for curl and other clients.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from . import tokens
from .client import ApiError, Client, ConnectionFailed

EX_UNAVAILABLE = 69


def add_client_commands(sub: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--socket", metavar="PATH", help="the daemon's Unix socket")
    common.add_argument("--url", metavar="URL", help="the daemon's TCP URL, e.g. http://127.0.0.1:9371")
    common.add_argument("--token-file", metavar="FILE",
                        help="bearer token file (default for TCP: the daemon's own, found by "
                             "itself; 'none': send no token)")
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")

    run = sub.add_parser("run", parents=[common], help="start a process: run [options] -- CMD ARGS...")
    run.add_argument("--ref")
    run.add_argument("--timeout", type=float)
    run.add_argument("--grace", type=float)
    run.add_argument("--cwd")
    run.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    run.add_argument("--wait", action="store_true", help="wait for it and exit with its exit code")
    run.add_argument("argv", nargs=argparse.REMAINDER)

    ps = sub.add_parser("ps", parents=[common], help="list processes, newest first")
    ps.add_argument("--state", choices=["queued", "running", "idle", "terminating"])
    ps.add_argument("--ref")
    ps.add_argument("--limit", type=int, default=50)

    for name, text in (("show", "one process record"), ("kill", "stop a process (SIGTERM, grace, SIGKILL)"),
                       ("rm", "forget an idle process and its output")):
        sub.add_parser(name, parents=[common], help=text).add_argument("id", type=int)

    stop = sub.add_parser("stop", parents=[common], help="graceful stop with a chosen signal and grace")
    stop.add_argument("id", type=int)
    stop.add_argument("--grace", type=float)
    stop.add_argument("--signal")

    sig = sub.add_parser("signal", parents=[common], help="deliver a signal (state unchanged)")
    sig.add_argument("id", type=int)
    sig.add_argument("signal")
    sig.add_argument("--group", action="store_true")

    logs = sub.add_parser("logs", parents=[common], help="print captured output")
    logs.add_argument("id", type=int)
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("--stderr", action="store_true")

    wait = sub.add_parser("wait", parents=[common], help="wait until idle; exit with the child's code")
    wait.add_argument("id", type=int)
    wait.add_argument("--timeout", type=float)

    events = sub.add_parser("events", parents=[common], help="print state changes as they happen")
    events.add_argument("--id", type=int)
    events.add_argument("--ref")

    token = sub.add_parser("token", help="print the daemon's API token (from <state dir>/token)")
    token.add_argument("--state-dir", metavar="DIR",
                       help="the daemon's state dir (default: $STABLEHAND_STATE_DIR, else the "
                            "daemon's default)")


def _client(args: argparse.Namespace) -> Client:
    return Client(socket_path=args.socket, url=args.url, token_file=args.token_file)


def print_token(args: argparse.Namespace) -> int:
    path = (Path(args.state_dir).expanduser() / tokens.FILE_NAME if args.state_dir
            else tokens.default_token_path(os.environ))
    try:
        print(tokens.read_plain(path))
    except FileNotFoundError:
        print(f"stablehand: no token at {path}: the daemon creates it on its first start "
              "(`stablehand serve`); a daemon started with --token-file uses that file instead",
              file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"stablehand: cannot read {path}: {exc.strerror} (it is the daemon user's: "
              "run this as that user)", file=sys.stderr)
        return 1
    except tokens.TokenFileError as exc:
        print(f"stablehand: {exc}", file=sys.stderr)
        return 1
    return 0


def exit_code_of(record: dict[str, Any]) -> int:
    """What `wait` exits with: the child's own code, 128+signal, or 1 for a failure without one."""
    if record["state"] != "idle":
        return 124
    if record.get("exitCode") is not None:
        return int(record["exitCode"])
    if record.get("exitSignal"):
        import signal
        try:
            return 128 + int(signal.Signals[record["exitSignal"]])
        except KeyError:
            return 1
    return 0 if record.get("exitState") == "success" else 1


def _table(records: list[dict[str, Any]]) -> str:
    rows = [("ID", "STATE", "EXIT", "PID", "REF", "CREATED", "COMMAND")]
    for r in records:
        exit_text = r["exitState"] or ""
        if r.get("exitCode") not in (None, 0):
            exit_text += f"({r['exitCode']})"
        elif r.get("exitSignal"):
            exit_text += f"({r['exitSignal']})"
        command = r.get("command") or " ".join(r.get("argv") or [])
        rows.append((str(r["id"]), r["state"], exit_text, str(r.get("pid") or ""), r.get("ref") or "",
                     r["createdAt"][:19].replace("T", " "), command[:60]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1]
                     for row in rows)


def _show(record: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(record, indent=2))
        return
    for key, value in record.items():
        print(f"{key:>15}: {value if value is not None else '-'}")


def run_client(args: argparse.Namespace) -> int:
    if args.command == "token":
        return print_token(args)
    try:
        client = _client(args)
    except OSError as exc:
        print(f"stablehand: cannot read token file {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    except tokens.TokenFileError as exc:
        print(f"stablehand: {exc}", file=sys.stderr)
        return 1
    try:
        return _dispatch(args, client)
    except ConnectionFailed as exc:
        print(f"stablehand: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    except ApiError as exc:
        print(f"stablehand: {exc.message} (HTTP {exc.status})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


def _dispatch(args: argparse.Namespace, client: Client) -> int:
    command = args.command
    if command == "run":
        argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not argv:
            print("stablehand: run needs a command: stablehand run [options] -- CMD ARGS...", file=sys.stderr)
            return 2
        env = dict(item.split("=", 1) for item in args.env if "=" in item)
        record = client.start(argv, ref=args.ref, timeout=args.timeout, grace=args.grace,
                              cwd=args.cwd, env=env or None)
        if args.wait:
            record = client.wait(record["id"])
            if args.json:
                _show(record, True)
            return exit_code_of(record)
        print(json.dumps(record, indent=2) if args.json else record["id"])
        return 0
    if command == "ps":
        page = client.list(state=args.state, ref=args.ref, limit=args.limit)
        print(json.dumps(page, indent=2) if args.json else _table(page["processes"]))
        return 0
    if command == "show":
        _show(client.get(args.id), args.json)
        return 0
    if command in ("kill", "stop"):
        record = client.kill(args.id) if command == "kill" else \
            client.stop(args.id, grace=args.grace, signal=args.signal)
        if args.json:
            _show(record, True)
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
        stream = "stderr" if args.stderr else "stdout"
        out = sys.stdout.buffer
        chunks = client.follow(args.id, stream) if args.follow else [client.output(args.id, stream)]
        for chunk in chunks:
            out.write(chunk)
            out.flush()
        return 0
    if command == "wait":
        record = client.wait(args.id, args.timeout)
        if args.json:
            _show(record, True)
        return exit_code_of(record)
    if command == "events":
        for event in client.events(args.id, args.ref):
            if args.json:
                print(json.dumps(event), flush=True)
            else:
                print(f"{event['id']:>6}  {event['state']:<12} {event['exitState'] or ''}", flush=True)
        return 0
    return 2
