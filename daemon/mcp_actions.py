"""What each ``stablehand mcp`` tool does, as synchronous calls to the daemon's API.

:class:`Actions` turns a tool's (already schema-checked) arguments into
:class:`daemon.client.Client` calls and the answer into a :class:`Outcome`:
text for the model (a status line, then the output as it is) and the same
facts as JSON (``structuredContent``). The MCP server runs these calls in
worker threads, so a long poll or wait holds a thread, never the event loop.
Standard library only (besides the client), so it is tested without the SDK.

Decisions where the issue is silent:

* Where it runs: a start without ``cwd`` runs in the server's own directory
  (hosts start MCP servers in the project's), a relative ``cwd`` is taken from
  there; the environment sent is the server's own as ``stablehand run`` sends
  its caller's (:mod:`daemon.cli_caller`), plus the tool's ``env`` -- minus the
  terminal settings (``TERM``, ``COLUMNS``, pagers, colour switches) a host
  passes down, so the daemon's plain-output defaults apply unless the tool's
  ``env`` asks otherwise. ``--clean-env`` sends only the tool's ``env``.
* Output cursors: each server session polls as its own consumer
  (``mcp-<random>``), so two hosts, or a host and a person, following the same
  process do not take each other's output; a restarted host starts over from
  the oldest byte kept.
* Errors (:class:`Outcome` with ``error``) carry the daemon's message and
  status; when the process is in the wrong state for the call (409), or a
  start failed, the last lines of its output follow, since they usually say why.
* Session-scoped leases (``--session-scoped``): every start carries ``lease``;
  :meth:`Actions.renew_leases` renews those still running, and on a clean end
  of the session (the host closed stdin) :meth:`Actions.release` stops them at
  once rather than letting their leases lapse.
"""

from __future__ import annotations

import os
import secrets
import shlex
import threading
from dataclasses import dataclass, field
from typing import Any

from .cli_caller import UsageError, child_env, resolve_cwd
from .client import ApiError, Client, ConnectionFailed
from .mcp_tools import (
    DEFAULT_MAX_BYTES,
    MAX_YIELD_MS,
    MIN_YIELD_MS,
    POLL_YIELD_MS,
    READ_LIMIT,
    START_YIELD_MS,
    STDIN_YIELD_MS,
    WAIT_TIMEOUT,
)

TERMINAL_ENV = frozenset({"TERM", "COLORTERM", "COLUMNS", "LINES", "PAGER", "GIT_PAGER", "NO_COLOR",
                          "FORCE_COLOR", "CLICOLOR", "CLICOLOR_FORCE"})
TTY_SIZE = {"rows": 24, "cols": 80}
TAIL_LINES = 20
TAIL_BYTES = 8192
LIST_LIMIT = 20
COMMAND_WIDTH = 100
COMPACT_KEYS = ("id", "name", "ref", "state", "exitState", "exitCode", "exitSignal", "error", "pid",
                "command", "argv", "startedAt", "completedAt")


@dataclass
class Outcome:
    """A tool's answer: ``text`` for the model, ``data`` as JSON, ``error`` for isError."""
    text: str
    data: dict[str, Any] = field(default_factory=dict)
    error: bool = False


def _ident(value: Any) -> int | str:
    """A tool's ``id``: digits (as a number or text) are an id, anything else a name."""
    return int(value) if isinstance(value, int) or str(value).isdigit() else str(value)


def _yield(value: Any, default: int) -> int:
    return max(MIN_YIELD_MS, min(MAX_YIELD_MS, default if value is None else int(value)))


def _command_of(record: dict[str, Any]) -> str:
    text = record.get("command") or shlex.join(record.get("argv") or [])
    return text if len(text) <= COMMAND_WIDTH else text[:COMMAND_WIDTH - 1] + "…"


def record_status(record: dict[str, Any]) -> str:
    """``running (pid 12)``, ``ended: success, exit code 0``, ``ended: failed: <why>``..."""
    state = record.get("state")
    if state != "idle":
        pid = record.get("pid")
        return f"{state} (pid {pid})" if pid else str(state)
    parts = [f"ended: {record.get('exitState')}"]
    if record.get("exitCode") is not None:
        parts.append(f"exit code {record['exitCode']}")
    elif record.get("exitSignal"):
        parts.append(f"killed by {record['exitSignal']}")
    text = ", ".join(parts)
    return f"{text}: {record['error']}" if record.get("error") and record.get("exitCode") is None \
        else text


def poll_status(poll: dict[str, Any]) -> str:
    if not poll.get("exited"):
        return str(poll.get("state", "running"))
    if poll.get("exitCode") is not None:
        return f"exited with code {poll['exitCode']}"
    if poll.get("exitSignal"):
        return f"killed by {poll['exitSignal']}"
    return f"ended ({poll.get('state')})"


def _compact(record: dict[str, Any]) -> dict[str, Any]:
    return {key: record[key] for key in COMPACT_KEYS if record.get(key) is not None}


def _utf8_bounds(data: bytes, at_start: bool, at_end: bool) -> tuple[int, int]:
    """(skip, keep): bytes to drop at the front (continuation bytes of a character cut by the
    range's start) and where to stop (before a character the range's end cut)."""
    skip = 0
    if not at_start:
        while skip < min(3, len(data)) and 0x80 <= data[skip] < 0xC0:
            skip += 1
    keep = len(data)
    if not at_end:
        for back in range(1, min(4, len(data) - skip) + 1):
            byte = data[-back]
            if byte < 0x80:
                break
            if byte >= 0xF8:           # never part of UTF-8: left to the decoder
                break
            if byte >= 0xC0:           # a lead byte: is its character whole?
                need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
                if back < need:
                    keep = len(data) - back
                break
    return skip, keep


class Actions:
    """The tools' calls over one client. ``lease``: seconds each start's lease lasts, or None."""

    def __init__(self, client: Client, *, lease: float | None = None, clean_env: bool = False,
                 consumer: str | None = None) -> None:
        self.client = client
        self.lease = lease
        self.clean_env = clean_env
        self.consumer = consumer or f"mcp-{secrets.token_hex(6)}"
        self._leased: set[int | str] = set()
        self._lock = threading.Lock()

    # --- dispatch -------------------------------------------------------------------------------

    def call(self, name: str, args: dict[str, Any]) -> Outcome:
        """Run tool ``name``; every failure the model can act on is an error Outcome."""
        method = getattr(self, name)
        try:
            outcome: Outcome = method(args)
            return outcome
        except ApiError as exc:
            text = f"{exc.message or 'error'} (HTTP {exc.status})"
            if exc.status == 409 and "id" in args:
                text += self._tail_text(_ident(args["id"]))
            return Outcome(text, {"error": exc.message, "status": exc.status}, error=True)
        except ConnectionFailed as exc:
            return Outcome(str(exc), {"error": str(exc)}, error=True)
        except UsageError as exc:
            return Outcome(str(exc), {"error": str(exc)}, error=True)

    # --- the tools ------------------------------------------------------------------------------

    def start_process(self, args: dict[str, Any]) -> Outcome:
        if ("argv" in args) == ("command" in args):
            raise UsageError("give exactly one of argv (a list) or command (a shell line)")
        cwd = resolve_cwd(args.get("cwd"), os.environ)
        env = {} if self.clean_env else {
            key: value for key, value in child_env([], False, os.environ, cwd).items()
            if key not in TERMINAL_ENV}
        env.update(args.get("env") or {})
        tty = bool(args.get("tty"))
        yield_ms = START_YIELD_MS if args.get("yield_ms") is None else int(args["yield_ms"])
        options: dict[str, Any] = {
            "cwd": cwd, "env": env or None, "timeout": args.get("timeout"),
            "tty": dict(TTY_SIZE) if tty else None,
            "stdin": "pipe" if args.get("stdin") and not tty else None,
            "lease": self.lease,
        }
        if yield_ms > 0:
            options.update(yieldMs=_yield(yield_ms, START_YIELD_MS),
                           maxBytes=int(args.get("max_bytes") or DEFAULT_MAX_BYTES),
                           consumer=self.consumer)
        record = self.client.start(args.get("argv"), command=args.get("command"), name=args.get("name"),
                                   **options)
        process_id = record["id"]
        data = _compact(record)
        if record.get("state") == "idle" and record.get("exitState") == "failed" \
                and record.get("exitCode") is None and record.get("exitSignal") is None:
            text = f"process {process_id} failed to start: {record.get('error') or 'unknown error'}"
            return Outcome(text, data, error=True)
        if self.lease is not None:
            with self._lock:
                self._leased.add(process_id)
        poll = record.get("poll")
        if poll is None:
            return Outcome(f"started process {process_id}: {record_status(record)}", data)
        return self._poll_outcome(process_id, poll, data, started=True)

    def poll_process(self, args: dict[str, Any]) -> Outcome:
        process_id = _ident(args["id"])
        poll = self._poll(process_id, _yield(args.get("yield_ms"), POLL_YIELD_MS),
                          args.get("max_bytes"), None)
        return self._poll_outcome(process_id, poll, {"id": process_id})

    def write_stdin(self, args: dict[str, Any]) -> Outcome:
        process_id = _ident(args["id"])
        text: str = args["input"]
        yield_ms = _yield(args.get("yield_ms"), STDIN_YIELD_MS)
        if args.get("close_stdin"):
            if text:
                self.client.write_stdin(process_id, text.encode())
            self.client.close_stdin(process_id)
            poll = self._poll(process_id, yield_ms, args.get("max_bytes"), None)
        else:
            poll = self._poll(process_id, yield_ms, args.get("max_bytes"), text)
        return self._poll_outcome(process_id, poll, {"id": process_id})

    def send_signal(self, args: dict[str, Any]) -> Outcome:
        process_id = _ident(args["id"])
        text = str(args["signal"]).strip()
        signal_value: int | str = int(text) if text.isdigit() else text
        self.client.signal(process_id, signal_value, group=bool(args.get("group")))
        return Outcome(f"sent {text} to process {process_id}", {"id": process_id, "signal": text})

    def stop_process(self, args: dict[str, Any]) -> Outcome:
        process_id = _ident(args["id"])
        record = self.client.stop(process_id, grace=args.get("grace"), signal=args.get("signal"))
        if record.get("state") != "idle":
            grace = args.get("grace")
            grace = record.get("grace") if grace is None else grace
            record = self.client.wait(process_id, timeout=float(grace or 10.0) + 10.0)
        return self._final(process_id, record)

    def wait_process(self, args: dict[str, Any]) -> Outcome:
        process_id = _ident(args["id"])
        timeout = float(args.get("timeout", WAIT_TIMEOUT))
        record = self.client.wait(process_id, timeout=timeout)
        if record.get("state") != "idle":
            return Outcome(f"process {process_id} is still {record_status(record)} after {timeout:g}s",
                           _compact(record))
        return self._final(process_id, record)

    def list_processes(self, args: dict[str, Any]) -> Outcome:
        page = self.client.list(state=args.get("state"), name=args.get("name"),
                                limit=int(args.get("limit", LIST_LIMIT)))
        records = page["processes"]
        lines = [f"{record['id']:>6}  {record_status(record)}  "
                 f"{(record.get('name') + '  ') if record.get('name') else ''}{_command_of(record)}"
                 for record in records]
        if page.get("next"):
            lines.append("(more: raise limit, or filter by state or name)")
        text = "\n".join(lines) if lines else "no processes"
        return Outcome(text, {"processes": [_compact(record) for record in records],
                              "more": bool(page.get("next"))})

    def read_output(self, args: dict[str, Any]) -> Outcome:
        process_id = _ident(args["id"])
        stream = args.get("stream", "stdout")
        try:
            first, end = self.client.output_range(process_id, stream)
        except ApiError as exc:
            if not exc.message:        # a HEAD answer has no body: ask for the record's error
                self.client.get(process_id)
            raise
        if args.get("tail_bytes"):
            start = max(first, end - int(args["tail_bytes"]))
            limit = end - start
        else:
            start = max(first, int(args.get("offset", 0)))
            limit = int(args.get("limit", READ_LIMIT))
        data = self.client.output(process_id, stream, start, limit) if start < end and limit else b""
        skip, keep = _utf8_bounds(data, at_start=start == first, at_end=start + len(data) >= end)
        text = data[skip:keep].decode(errors="replace")
        begin, following = start + skip, start + keep
        header = f"{stream} of process {process_id}, bytes {begin}-{following} of {end}"
        if first > 0:
            header += f" (bytes before {first} were dropped by the output cap)"
        if following < end:
            header += f"; continue with offset {following}"
        return Outcome(f"{header}\n{text}", {"id": process_id, "stream": stream, "offset": begin,
                                             "next": following, "end": end, "first": first,
                                             "text": text})

    # --- leases ---------------------------------------------------------------------------------

    def renew_leases(self) -> None:
        """Renew the lease of every process this session started that still runs."""
        with self._lock:
            leased = list(self._leased)
        for process_id in leased:
            try:
                ended = self.client.lease(process_id).get("state") == "idle"
            except ApiError as exc:
                ended = exc.status in (404, 409)
            except ConnectionFailed:
                continue                 # the daemon is away; it may be back before the lease lapses
            if ended:
                self._forget(process_id)

    def release(self) -> None:
        """The session ended cleanly: stop what it started that still runs."""
        with self._lock:
            leased, self._leased = list(self._leased), set()
        for process_id in leased:
            try:
                self.client.stop(process_id)
            except (ApiError, ConnectionFailed):
                pass

    def _forget(self, process_id: int | str) -> None:
        with self._lock:
            self._leased.discard(process_id)

    # --- helpers --------------------------------------------------------------------------------

    def _poll(self, process_id: int | str, yield_ms: int, max_bytes: Any, text: str | None) -> dict[str, Any]:
        return self.client.poll(process_id, yield_ms=yield_ms,
                                max_bytes=int(max_bytes or DEFAULT_MAX_BYTES), input=text,
                                consumer=self.consumer)

    def _poll_outcome(self, process_id: int | str, poll: dict[str, Any], data: dict[str, Any],
                      started: bool = False) -> Outcome:
        if poll.get("exited"):
            self._forget(process_id)
        lead = "started process" if started else "process"
        output = poll.get("output") or ""
        text = f"{lead} {process_id}: {poll_status(poll)}\n" + (output or "(no new output)")
        return Outcome(text, {**data, **{key: poll.get(key) for key in
                                         ("state", "exited", "exitCode", "exitSignal", "truncated")},
                              "output": output})

    def _final(self, process_id: int | str, record: dict[str, Any]) -> Outcome:
        if record.get("state") == "idle":
            self._forget(process_id)
        return Outcome(f"process {process_id}: {record_status(record)}{self._tail_text(process_id)}",
                       _compact(record))

    def _tail_text(self, process_id: int | str) -> str:
        """Its last output lines, labelled per stream, or '' (best effort: never raises)."""
        parts = []
        for stream in ("stdout", "stderr"):
            try:
                first, end = self.client.output_range(process_id, stream)
                start = max(first, end - TAIL_BYTES)
                data = self.client.output(process_id, stream, start, end - start) if end > start else b""
            except (ApiError, ConnectionFailed):
                continue
            lines = data.decode(errors="replace").splitlines()[-TAIL_LINES:]
            if lines:
                parts.append(f"\n--- last {stream} lines ---\n" + "\n".join(lines))
        return "".join(parts)
