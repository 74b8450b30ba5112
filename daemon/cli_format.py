"""How the CLI shows records to a person: the ``ps`` table, the ``show`` view, ``events`` lines.

Pure functions of a record (the API's JSON, untouched) and the current time, so
they are tested without a daemon. Decisions:

* Times on the wire are UTC; a person reads them in the local zone, with the
  zone's name and how long ago (``2026-12-03 13:10:49 CET (4m12s ago)``).
* Durations are short human units: ``0.4s``, ``3s``, ``4m12s``, ``2h3m``,
  ``5d``/``5d3h``. ``AGE/DURATION`` in ``ps`` is, for a queued process, the time
  since it was created; for a running or terminating one, the time since it
  started; for an idle one, how long it ran (completed - started), ``-`` if it
  never started.
* ``EXIT`` says what ended the process in the fewest words: its exit code
  (``0``, ``3``), else the signal (``SIGKILL``), else its exit state and the
  head of the error (``failed: cannot execute``). A ``canceled`` or ``timeout``
  stop adds that word (``SIGTERM (canceled)``): the code alone would not say
  that someone stopped it.
* ``COMMAND`` is the shell command a process was started with, else its argv
  shell-quoted; it is cut to the terminal's width with an ellipsis, and long
  refs are cut too, so one process is one line.
* When any listed record is managed, ``ps`` adds NAME (after ID), RESTARTS and
  HEALTH (after STATE; ``-`` for a record that is not managed or has no health
  check), and STATE shows a managed record's status where it says more than
  ``running`` (``running/backing_off``). A table of plain records is unchanged.
* ``runs`` shows a managed process's runs: RUN PID STARTED ENDED EXIT REASON,
  times local and to the second (``-`` while a run goes on).
"""

from __future__ import annotations

import datetime as dt
import shlex
import sys
from collections.abc import Sequence
from typing import Any

MAX_REF_WIDTH = 24
PS_COLUMNS = ("ID", "REF", "STATE", "EXIT", "AGE/DURATION", "COMMAND")
PS_MANAGED_COLUMNS = ("ID", "NAME", "REF", "STATE", "RESTARTS", "HEALTH", "EXIT", "AGE/DURATION",
                      "COMMAND")
RUNS_COLUMNS = ("RUN", "PID", "STARTED", "ENDED", "EXIT", "REASON")


def ellipsis() -> str:
    """``…`` where the terminal's encoding can show it, else ``...``."""
    encoding = (getattr(sys.stdout, "encoding", None) or "ascii").lower().replace("-", "")
    return "…" if encoding in ("utf8", "utf16", "utf32") else "..."


def cut(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, ending with an ellipsis when it was cut."""
    if len(text) <= width:
        return text
    mark = ellipsis()
    return text[: max(0, width - len(mark))] + mark if width > len(mark) else text[:width]


def parse_time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """3s, 4m12s, 2h3m, 5d (5d3h): the two largest units, short."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h" if hours else f"{days}d"


def local_time(text: str | None, now: dt.datetime, millis: bool = False) -> str:
    """An API time in the local zone with its name, and its age: ``… CET (4m12s ago)``."""
    when = parse_time(text)
    if when is None:
        return "-"
    local = when.astimezone()
    shown = local.strftime("%Y-%m-%d %H:%M:%S")
    if millis:
        shown += f".{local.microsecond // 1000:03d}"
    return f"{shown} {local.strftime('%Z')} ({human_duration((now - when).total_seconds())} ago)"


def event_time(when: dt.datetime) -> str:
    """An event's time, local, to the millisecond, with the zone's UTC offset (one stream may
    run for days, so the date is kept)."""
    local = when.astimezone()
    return local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{local.microsecond // 1000:03d}" + \
        local.strftime("%z")


def command_of(record: dict[str, Any]) -> str:
    if record.get("command"):
        return str(record["command"])
    return shlex.join(str(arg) for arg in record.get("argv") or [])


def error_head(error: str) -> str:
    """The first words of an error, before any quoted name or detail:
    ``cannot execute '/x': No such file`` → ``cannot execute``."""
    head = error.split("'", 1)[0].split(":", 1)[0].strip()
    return head or error


def exit_text(record: dict[str, Any]) -> str:
    """The EXIT column: code, else signal, else exit state and reason (see the module doc)."""
    exit_state = record.get("exitState")
    if record.get("exitCode") is not None:
        main = str(record["exitCode"])
    elif record.get("exitSignal"):
        main = str(record["exitSignal"])
    elif exit_state:
        error = record.get("error")
        return f"{exit_state}: {error_head(error)}" if error and exit_state == "failed" else exit_state
    else:
        return ""
    return f"{main} ({exit_state})" if exit_state in ("canceled", "timeout") else main


def age_or_duration(record: dict[str, Any], now: dt.datetime) -> str:
    state = record.get("state")
    created, started = parse_time(record.get("createdAt")), parse_time(record.get("startedAt"))
    if state == "queued" and created:
        return human_duration((now - created).total_seconds())
    if state in ("running", "terminating"):
        since = started or created
        return human_duration((now - since).total_seconds()) if since else "-"
    completed = parse_time(record.get("completedAt"))
    if started and completed:
        return human_duration((completed - started).total_seconds())
    return "-"


def ps_table(records: Sequence[dict[str, Any]], now: dt.datetime, width: int | None) -> str:
    """The ``ps`` table; COMMAND is cut to ``width`` characters of line (None: never cut)."""
    managed = any(record.get("managed") for record in records)
    columns = PS_MANAGED_COLUMNS if managed else PS_COLUMNS
    rows: list[tuple[str, ...]] = [columns]
    for record in records:
        cells = [str(record["id"]), cut(record.get("ref") or "-", MAX_REF_WIDTH),
               str(record.get("state", "")), exit_text(record) or "-",
               age_or_duration(record, now), command_of(record)]
        if managed:
            cells[1:3] = [cut(record.get("name") or "-", MAX_REF_WIDTH), cells[1], _state(record),
                          *_restarts_health(record)]
        rows.append(tuple(cells))
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns) - 1)]
    lines = []
    for row in rows:
        head = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  "
        command = row[-1] if width is None else cut(row[-1], max(8, width - len(head)))
        lines.append(head + command)
    return "\n".join(lines)


def _state(record: dict[str, Any]) -> str:
    state = str(record.get("state", ""))
    status = (record.get("managed") or {}).get("status")
    return f"{state}/{status}" if state == "running" and status not in (None, "running") else state


def _restarts_health(record: dict[str, Any]) -> tuple[str, str]:
    info = record.get("managed")
    if not info:
        return "-", "-"
    health = info.get("healthStatus")
    return str(info.get("restartCount", 0)), "-" if health in (None, "disabled") else str(health)


def short_time(text: str | None) -> str:
    """An API time in the local zone, to the second, without its age (a column of them)."""
    when = parse_time(text)
    return "-" if when is None else when.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def runs_table(runs: Sequence[dict[str, Any]]) -> str:
    """``runs``: one line per run of a managed process (see the module doc)."""
    rows = [RUNS_COLUMNS]
    for run in runs:
        exit_ = str(run["exitCode"]) if run.get("exitCode") is not None else \
            str(run.get("exitSignal") or "-")
        rows.append((str(run.get("run", "")), str(run.get("pid") or "-"),
                     short_time(run.get("startedAt")), short_time(run.get("endedAt")), exit_,
                     str(run.get("reason") or "-")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(RUNS_COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


_LABELS = {
    "id": "id", "ref": "ref", "state": "state", "exitState": "exit state", "error": "error",
    "createdAt": "created", "startedAt": "started", "completedAt": "completed",
    "argv": "argv", "command": "command", "cwd": "cwd", "pid": "pid", "exitCode": "exit code",
    "exitSignal": "exit signal", "timeout": "timeout", "grace": "grace", "stdin": "stdin",
    "outputTruncated": "output truncated",
}
_SECONDS = frozenset({"timeout", "grace"})


def _value(key: str, value: Any, now: dt.datetime) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key.endswith("At") and isinstance(value, str):
        return local_time(value, now)
    if key == "argv" and isinstance(value, list):
        return shlex.join(str(arg) for arg in value)
    if key in _SECONDS and isinstance(value, (int, float)):
        return f"{value:g}s"
    if isinstance(value, (dict, list)):
        import json
        return json.dumps(value)
    return str(value)


def show_view(record: dict[str, Any], now: dt.datetime) -> str:
    """``show``: one ``label: value`` line per field, in the record's order, plus how long it
    has run (or ran)."""
    items = [(_LABELS.get(key, key), _value(key, value, now)) for key, value in record.items()]
    if record.get("startedAt"):
        label = "ran for" if record.get("state") == "idle" else "running for"
        items.append((label, age_or_duration(record, now)))
    width = max(len(label) for label, _ in items)
    return "\n".join(f"{label:>{width}}: {value}" for label, value in items)


def event_line(event: dict[str, Any], received: dt.datetime) -> str:
    """One ``events`` line: time, id, ref, state, exit state, command.

    The time is when the CLI received the change (live, so within milliseconds of
    it; the record's own times are in ``--json``): the lines stay in order."""
    record = event.get("record") or {}
    state = str(event.get("state") or record.get("state") or "")
    ref = record.get("ref") or "-"
    exit_state = event.get("exitState") or "-"
    return f"{event_time(received)}  {event.get('id', ''):>6}  {ref:<12}  {state:<11}  " \
           f"{exit_state:<8}  {command_of(record)}"
