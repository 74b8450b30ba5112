"""The CLI's ``stop``: one process with a chosen signal and grace, or many at once.

``stablehand stop ID [--grace G] [--signal SIG]`` is the graceful stop of one process
(``POST /processes/{id}/stop``); it answers as soon as the stop has begun.

``stablehand stop --all | --ref R | --state running|queued [--grace G]`` is the bulk
stop (issue 21, ``POST /processes/stop``): SIGTERM to every selected process's tree,
SIGKILL after the grace (``--grace`` replaces each one's own), queued ones canceled, and
it returns once all of them are idle, printing one line per process: ``ID STATE
EXIT_STATE`` (``--json``: the API's answer). Nothing matching prints nothing and exits 0.

Decisions:

* ``--all`` is two bulk stops: the queue first (``state: queued``), so that no queued
  process takes a slot the running ones free, then ``state: running``. Processes already
  terminating are left to their own stops.
* ``--signal`` goes with an ID only: a bulk stop sends SIGTERM, as a kill does.
* Exit 0 once every selected process is idle; 1 if one is still not idle when the daemon
  gave up waiting (its tree outlived SIGKILL; it is named on stderr); 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .cli_caller import UsageError
from .cli_managed import id_or_name
from .cli_stream import say
from .client import Client

STOPPABLE_STATES = ("running", "queued")


def add_stop_command(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                     common: argparse.ArgumentParser, as_json: argparse.ArgumentParser,
                     id_help: str) -> None:
    stop = sub.add_parser(
        "stop", parents=[common, as_json],
        help="stop one process (a chosen signal and grace, then SIGKILL), or many at once",
        description="stop ID: the given signal (default SIGTERM) to its tree, SIGKILL after the "
                    "grace. stop --all | --ref REF | --state STATE: SIGTERM to every selected "
                    "process, SIGKILL after the grace, queued ones canceled; returns once all "
                    "are idle and prints ID STATE EXIT_STATE for each.")
    stop.add_argument("id", nargs="?", type=id_or_name, metavar="ID", help=id_help)
    which = stop.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="every queued and running process")
    which.add_argument("--ref", metavar="REF", help="every live process with this ref")
    which.add_argument("--state", choices=STOPPABLE_STATES, metavar="STATE",
                       help="every process in this state: running or queued")
    stop.add_argument("--grace", type=float, metavar="SECONDS",
                      help="seconds between the signal and SIGKILL (default: each process's own)")
    stop.add_argument("--signal", metavar="SIGNAL",
                      help="with ID: the first signal, e.g. SIGINT (default SIGTERM)")


def run_stop(args: argparse.Namespace, client: Client) -> int:
    """``stop``; the caller turns client errors into exit codes."""
    bulk = args.all or args.ref is not None or args.state is not None
    if bulk == (args.id is not None):
        raise UsageError("stop needs an ID, or one of --all, --ref REF, --state STATE")
    if not bulk:
        record = client.stop(args.id, grace=args.grace, signal=args.signal)
        if args.json:
            print(json.dumps(record, indent=2))
        else:
            print(f"{args.id} {record['state']}")
        return 0
    if args.signal is not None:
        raise UsageError("--signal goes with an ID: a bulk stop sends SIGTERM")
    if args.grace is not None and not 0 <= args.grace <= 86400:
        raise UsageError("--grace must be 0 to 86400 seconds")
    if args.all:
        records = client.stop_many(state="queued", grace=args.grace)
        records += client.stop_many(state="running", grace=args.grace)
    else:
        records = client.stop_many(ref=args.ref, state=args.state, grace=args.grace)
    if args.json:
        print(json.dumps({"processes": records}, indent=2))
    else:
        for record in records:
            print(f"{record['id']} {record['state']} {record.get('exitState') or '-'}", flush=True)
    return _outcome(records)


def _outcome(records: list[dict[str, Any]]) -> int:
    left = [str(record["id"]) for record in records if record["state"] != "idle"]
    if left:
        say(f"not idle yet (the daemon stopped waiting): {' '.join(left)}")
        return 1
    return 0
