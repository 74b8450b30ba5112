"""The CLI for managed processes: ``apply``, ``restart``, ``runs``, and ``run``'s managed options.

``run --name N --restart on-failure --health-http :8080/healthz -- CMD`` starts a
managed process; ``restart NAME|ID`` starts its next run at once; ``runs NAME|ID``
lists its runs; ``apply FILE`` brings the daemon in line with a services file
(:mod:`daemon.services`, :mod:`daemon.services_apply`). ``ps`` shows NAME,
RESTARTS and HEALTH by itself (:mod:`daemon.cli_format`).

Decisions:

* Where a command takes an id it takes a name too: all digits is an id, anything
  else a name (a name is never all digits).
* Health check addresses are ``[HOST]:PORT`` (``:5432``), with ``/PATH`` for
  HTTP (``:8080/healthz``, default ``/``). The daemon probes 127.0.0.1, so HOST,
  when given, must be a loopback name. ``--health-exec CMD`` runs CMD with
  ``/bin/sh -c``; exit 0 means healthy.
* ``--restart`` takes ``on-failure`` (or ``on_failure``), ``always`` or ``never``;
  ``--max-restarts`` alone means ``on-failure``.
* ``apply`` exits 2 for a file it refuses (unreadable, invalid, an unknown
  dependency, a cycle), before anything is started; 1 when a step fails (the
  message names the service); 0 when done. ``--dry-run`` prints the plan, one
  ``ACTION NAME`` line per service in the order apply would go, and changes nothing.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from . import services, services_apply
from .cli_caller import UsageError
from .cli_format import runs_table
from .cli_stream import say
from .client import Client

COMMANDS = frozenset({"apply", "restart", "runs"})
ID_OR_NAME_HELP = "the process id, or a managed process's name"
POLICIES = {"on-failure": "on_failure", "on_failure": "on_failure", "always": "always",
            "never": "never"}
LOOPBACK = ("", "localhost", "127.0.0.1")


def id_or_name(text: str) -> int | str:
    """An argparse type: digits are an id, anything else a name."""
    if text.isdigit():
        return int(text)
    if not text or "/" in text:
        raise argparse.ArgumentTypeError(f"{text!r} is neither an id nor a name (names have no '/')")
    return text


def add_managed_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                         common: argparse.ArgumentParser, as_json: argparse.ArgumentParser) -> None:
    apply = sub.add_parser(
        "apply", parents=[common], help="start, restart and stop managed processes as a services "
                                        "file declares them",
        description="Create the services the file declares that are not running, restart those "
                    "whose declaration changed, and start each after its depends_on conditions "
                    "hold. See docs/managed.md for the file's format.")
    apply.add_argument("file", metavar="FILE", help="the services file (TOML)")
    apply.add_argument("--prune", action="store_true",
                       help="also stop services a services file started that this file no longer has")
    apply.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    apply.add_argument("--wait-timeout", type=float, default=services_apply.DEFAULT_WAIT,
                       metavar="SECONDS", help="longest wait for each dependency's condition "
                                               f"(default {services_apply.DEFAULT_WAIT:g})")
    sub.add_parser("restart", parents=[common, as_json],
                   help="stop a managed process's current run and start a new one now"
                   ).add_argument("id", type=id_or_name, metavar="NAME|ID", help=ID_OR_NAME_HELP)
    sub.add_parser("runs", parents=[common, as_json],
                   help="a managed process's runs: RUN PID STARTED ENDED EXIT REASON"
                   ).add_argument("id", type=id_or_name, metavar="NAME|ID", help=ID_OR_NAME_HELP)


def add_run_options(run: argparse.ArgumentParser) -> None:
    managed = run.add_argument_group("managed process (restarted per its policy; see docs/managed.md)")
    managed.add_argument("--name", metavar="NAME",
                         help="a unique name among live processes (not all digits, no '/')")
    managed.add_argument("--restart", metavar="POLICY",
                         help="on-failure, always or never (default with a name alone: never)")
    managed.add_argument("--max-restarts", type=int, metavar="N",
                         help="end it (failed) after N restarts (default: no limit)")
    health = managed.add_mutually_exclusive_group()
    health.add_argument("--health-http", metavar="[HOST]:PORT[/PATH]",
                        help="healthy while GET http://127.0.0.1:PORT/PATH answers 2xx")
    health.add_argument("--health-tcp", metavar="[HOST]:PORT",
                        help="healthy while 127.0.0.1:PORT accepts a connection")
    health.add_argument("--health-exec", metavar="CMD", help="healthy while CMD (sh -c) exits 0")


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The managed fields ``run`` adds to its start (none when no option was given)."""
    options: dict[str, Any] = {}
    if args.name is not None:
        options["name"] = args.name
    if args.restart is not None or args.max_restarts is not None:
        policy = POLICIES.get((args.restart or "on-failure").lower())
        if policy is None:
            raise UsageError(f"--restart {args.restart!r}: use on-failure, always or never")
        if args.max_restarts is not None and args.max_restarts < 0:
            raise UsageError("--max-restarts must be 0 or more")
        options["restart"] = {"policy": policy, "maxRestarts": args.max_restarts}
    if args.health_http is not None:
        port, path = _address(args.health_http, "--health-http", with_path=True)
        options["health_check"] = {"type": "http", "port": port, "path": path}
    elif args.health_tcp is not None:
        options["health_check"] = {"type": "tcp", "port": _address(args.health_tcp, "--health-tcp")[0]}
    elif args.health_exec is not None:
        if not args.health_exec.strip():
            raise UsageError("--health-exec needs a command")
        options["health_check"] = {"type": "exec", "command": ["/bin/sh", "-c", args.health_exec]}
    return options


def _address(text: str, flag: str, with_path: bool = False) -> tuple[int, str]:
    """``[HOST]:PORT[/PATH]`` → (port, path)."""
    address, slash, path = text.partition("/") if with_path else (text, "", "")
    host, _, port_text = address.rpartition(":")
    if host.strip("[]") not in LOOPBACK + ("::1",):
        raise UsageError(f"{flag} {text}: the daemon checks 127.0.0.1; give :PORT")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise UsageError(f"{flag} {text}: expected [HOST]:PORT{'[/PATH]' if with_path else ''}, "
                         "PORT from 1 to 65535")
    return int(port_text), "/" + path


def run_managed(args: argparse.Namespace, client: Client) -> int:
    """``apply``, ``restart`` and ``runs``; the caller turns client errors into exit codes."""
    if args.command == "restart":
        record = client.restart(args.id)
        if args.json:
            print(json.dumps(record, indent=2))
        else:
            run = (record.get("managed") or {}).get("run")
            print(f"{record['id']} restarted" + (f" (run {run})" if run else ""))
        return 0
    if args.command == "runs":
        runs = client.runs(args.id)
        print(json.dumps({"runs": runs}, indent=2) if args.json else runs_table(runs), flush=True)
        return 0
    return _apply(args, client)


def _apply(args: argparse.Namespace, client: Client) -> int:
    if not args.wait_timeout > 0:
        raise UsageError("--wait-timeout must be a number of seconds above 0")
    try:
        declared = services.load(args.file)
    except services.ServicesError as exc:
        raise UsageError(str(exc)) from None
    if args.dry_run:
        records = services_apply.fetch_records(client, declared, args.prune)
        for step in services.plan(declared, records, args.prune):
            print(step.describe())
        return 0
    try:
        services_apply.apply(client, declared, prune=args.prune, wait_timeout=args.wait_timeout,
                             say=lambda line: print(line, flush=True))
    except services_apply.ApplyFailed as exc:
        say(f"apply failed: {exc}")
        return 1
    return 0
