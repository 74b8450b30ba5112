"""The CLI's long-running commands: ``run --wait``/``--attach``, ``logs`` (``-f``), ``events``.

All of them use the synchronous :class:`daemon.client.Client`, one connection
per stream, in threads (a process's stdout and stderr are two HTTP streams read
at the same time). Decisions:

* Both streams go to the terminal as they arrive, each to its own fd (the
  child's stdout to ours, its stderr to ours), as ``docker run`` and ``docker
  logs`` do; one stream picked alone (``logs --stderr``) goes to stdout, so a
  pipe gets it. ``logs`` prints the two streams in the order their lines
  arrived, by the arrival times the keeper records (lines of equal time, or
  without a recorded time, stdout first): each stream is fetched with
  ``timestamps=1`` and the two are merged line by line, never held whole. With
  ``-f`` that is the lines already there; then each stream as it comes.
* ``--since`` takes a duration ago (``30s``, ``10m``, ``1h30m``, ``2d``), an
  RFC 3339 time or unix seconds; the CLI sends the daemon an absolute time.
  With ``--tail`` the last N lines of what arrived since then. ``--timestamps``
  (``-t``) prints each line's arrival time first, as the daemon gives it: RFC
  3339 in UTC to the millisecond, like ``docker logs -t``.
* ``--tail N`` counts lines from the end of each stream (the daemon serves byte
  ranges, so the CLI reads backwards in blocks until it has N newlines).
  ``-f`` starts from the last 10 lines, as ``tail -f`` does (at ``--since`` if
  given); ``--tail 0`` shows only what comes next, ``--from-start`` replays
  everything.
* A follow ends normally when the process is idle. When it ends otherwise (the
  connection broke, or the daemon closed it while the process still runs, as a
  daemon that is stopping does), the CLI says so on stderr and exits 69
  (EX_UNAVAILABLE). ``events`` never ends on its own, so its end is always that.
* Ctrl-C during ``run --wait``: the first sends SIGINT to the child (it may
  clean up and exit as it likes), the second asks the daemon to stop it (its
  signal, its grace, then SIGKILL), a third leaves the CLI at once and the stop
  goes on without it. The CLI then exits with the child's own code.
"""

from __future__ import annotations

import datetime as dt
import heapq
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, BinaryIO

from .cli_format import event_line
from .client import ApiError, Client, ConnectionFailed, StreamBroken

EX_UNAVAILABLE = 69
TAIL_BLOCK = 64 * 1024        # bytes read per step when looking for the last lines
DEFAULT_FOLLOW_TAIL = 10      # lines `logs -f` shows before following, as tail -f
JOIN_AFTER_IDLE = 10.0        # seconds to let the output streams finish once the process is idle
STAMP_LENGTH = len("2026-12-03T13:10:49.123Z")   # the daemon's arrival stamps (timestamps=1)


def say(message: str) -> None:
    print(f"stablehand: {message}", file=sys.stderr, flush=True)


def exit_code_of(record: dict[str, Any]) -> int:
    """What `wait` exits with: the child's own code, 128+signal, or 1 for a failure without one."""
    if record["state"] != "idle":
        return 124
    if record.get("exitCode") is not None:
        return int(record["exitCode"])
    if record.get("exitSignal"):
        try:
            return 128 + int(signal.Signals[record["exitSignal"]])
        except KeyError:
            return 1
    return 0 if record.get("exitState") == "success" else 1


def not_started_error(record: dict[str, Any]) -> str | None:
    """The error of a record that failed without running (a spawn error), else None."""
    if record.get("state") == "idle" and record.get("exitState") == "failed" \
            and record.get("exitCode") is None and record.get("exitSignal") is None:
        return str(record.get("error") or "it failed to start")
    return None


# --- tails -------------------------------------------------------------------------------

def tail_offset(client: Client, process_id: int, stream: str, lines: int,
                since: str | None = None) -> int:
    """The byte offset where the last ``lines`` lines of a stream begin (a final line without
    a newline counts as a line), not before what arrived at ``since``."""
    first, end = client.output_range(process_id, stream, since)
    if lines <= 0:
        return end
    position, found, skip_final = end, 0, True
    while position > first:
        start = max(first, position - TAIL_BLOCK)
        block = client.output(process_id, stream, offset=start, limit=position - start)
        if not block:
            return position
        search_end = len(block)
        if skip_final and block.endswith(b"\n"):
            search_end -= 1               # the last line's own newline ends it, not a line
        skip_final = False
        while (index := block.rfind(b"\n", 0, search_end)) >= 0:
            found += 1
            if found == lines:
                return start + index + 1
            search_end = index
        position = start
    return first


# --- streams -------------------------------------------------------------------------------

class Pump(threading.Thread):
    """Copies one output stream to a binary file as it arrives; keeps what ended it."""

    def __init__(self, client: Client, process_id: int, stream: str, offset: int,
                 out: BinaryIO, follow: bool, timestamps: bool = False) -> None:
        super().__init__(name=f"stablehand-{stream}", daemon=True)
        self.client, self.process_id, self.stream = client, process_id, stream
        self.offset, self.out, self.follow_output = offset, out, follow
        self.timestamps = timestamps
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for chunk in self.client.output_chunks(self.process_id, self.stream, self.offset,
                                                   follow=self.follow_output,
                                                   timestamps=self.timestamps):
                self.out.write(chunk)
                self.out.flush()
        except BaseException as exc:  # handed to the main thread, which reports it
            self.error = exc


def _outputs(streams: list[str]) -> dict[str, BinaryIO]:
    if len(streams) == 1:
        return {streams[0]: sys.stdout.buffer}
    return {"stdout": sys.stdout.buffer, "stderr": sys.stderr.buffer}


def start_pumps(client: Client, process_id: int, offsets: dict[str, int], follow: bool,
                timestamps: bool = False) -> list[Pump]:
    outs = _outputs(list(offsets))
    pumps = [Pump(client, process_id, stream, offset, outs[stream], follow, timestamps)
             for stream, offset in offsets.items()]
    for pump in pumps:
        pump.start()
    return pumps


def _first_error(pumps: list[Pump]) -> BaseException | None:
    return next((pump.error for pump in pumps if pump.error is not None), None)


def print_logs(client: Client, process_id: int, streams: list[str], tail: int | None,
               follow: bool, from_start: bool, since: str | None = None,
               timestamps: bool = False) -> int:
    """``logs``: see the module's docstring for the order, the tail, ``--since`` and how a
    follow ends. ``since`` is what the daemon takes (:func:`since_argument`)."""
    client.get(process_id)   # a clear 404 before anything else
    if tail is None and follow and not from_start and since is None:
        tail = DEFAULT_FOLLOW_TAIL
    offsets = {stream: tail_offset(client, process_id, stream, tail, since) if tail is not None
               else client.output_range(process_id, stream, since)[0] if since is not None else 0
               for stream in streams}
    if not follow:
        outs = _outputs(streams)
        if len(streams) == 1:
            for chunk in client.output_chunks(process_id, streams[0], offsets[streams[0]],
                                              timestamps=timestamps):
                outs[streams[0]].write(chunk)
                outs[streams[0]].flush()
            return 0
        _print_by_arrival(client, process_id, offsets, None, outs, timestamps)
        return 0
    if len(streams) > 1:   # what is there already in arrival order, then each as it comes
        ends = {stream: client.output_range(process_id, stream)[1] for stream in streams}
        _print_by_arrival(client, process_id, offsets, ends, _outputs(streams), timestamps)
        offsets = {stream: max(offsets[stream], ends[stream]) for stream in streams}
    pumps = start_pumps(client, process_id, offsets, follow=True, timestamps=timestamps)
    for pump in pumps:
        pump.join()
    error = _first_error(pumps)
    if isinstance(error, StreamBroken):
        say(f"the daemon went away while following process {process_id} (the stream broke off)")
        return EX_UNAVAILABLE
    if error is not None:
        raise error
    return _after_follow(client, process_id)


def _stamped_lines(client: Client, process_id: int, stream: str, offset: int,
                   end: int | None) -> Iterator[tuple[bytes, str, bytes]]:
    """(arrival stamp, stream, stamped line) for each line of a stream from ``offset`` (to
    ``end``), as its chunks arrive."""
    if end is not None and end <= offset:
        return
    held = b""
    for chunk in client.output_chunks(process_id, stream, offset, timestamps=True,
                                      limit=None if end is None else end - offset):
        held += chunk
        *lines, held = held.split(b"\n")
        for line in lines:
            yield line[:STAMP_LENGTH], stream, line + b"\n"
    if held:
        yield held[:STAMP_LENGTH], stream, held


def _print_by_arrival(client: Client, process_id: int, offsets: dict[str, int],
                      ends: dict[str, int] | None, outs: dict[str, BinaryIO], timestamps: bool) -> None:
    """Both streams' lines from ``offsets`` (to ``ends``) in the order they arrived, each to
    its own output; stdout first on a tie (merge is stable). The stamps are fixed width, so
    they compare as text."""
    merged = heapq.merge(*(_stamped_lines(client, process_id, stream, offset,
                                          None if ends is None else ends[stream])
                           for stream, offset in offsets.items()), key=lambda item: item[0])
    for _, stream, line in merged:
        outs[stream].write(line if timestamps else line.partition(b" ")[2])
        outs[stream].flush()


_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?")


def since_argument(text: str, now: float) -> str:
    """``--since`` as the daemon takes it: a duration ago (``90s``, ``10m``, ``1h30m``, ``2d``)
    becomes unix seconds; an RFC 3339 time or unix seconds goes as it is. ValueError with a
    message for a person otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if match and any(match.groups()):
        days, hours, minutes, seconds = (float(group or 0) for group in match.groups())
        ago = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
        return f"{max(0.0, now - ago):.3f}"
    from .output_times import since_ms
    try:
        since_ms(text)
    except ValueError:
        raise ValueError(f"--since {text!r}: give a duration ago (30s, 10m, 1h30m, 2d), an RFC "
                         "3339 time (2026-12-03T13:10:49Z) or unix seconds") from None
    return text


def _after_follow(client: Client, process_id: int) -> int:
    """A follow ended without an error: normal if the process is idle, else the daemon ended it."""
    try:
        record = client.get(process_id)
    except ConnectionFailed:
        say(f"the daemon went away while following process {process_id}")
        return EX_UNAVAILABLE
    if record["state"] != "idle":
        say(f"the daemon ended the output stream while process {process_id} is still "
            f"{record['state']} (it is stopping or restarting)")
        return EX_UNAVAILABLE
    return 0


def print_events(client: Client, process_id: int | None, ref: str | None, as_json: bool) -> int:
    """``events``: one line per state change until the daemon closes the stream."""
    import json
    try:
        for event in client.events(process_id, ref):
            if as_json:
                print(json.dumps(event), flush=True)
            else:
                print(event_line(event, dt.datetime.now(dt.UTC)), flush=True)
    except StreamBroken:
        say("the event stream ended: the daemon went away (the stream broke off)")
        return EX_UNAVAILABLE
    say("the event stream ended: the daemon closed it (it is stopping or restarting)")
    return EX_UNAVAILABLE


# --- run --wait / --attach -------------------------------------------------------------------

class Interrupts:
    """Counts SIGINTs while installed (the main thread acts on them, not the handler)."""

    def __init__(self) -> None:
        self.count = 0
        self._previous: Callable[[int, FrameType | None], Any] | int | None = None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1

    def __enter__(self) -> Interrupts:
        self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.SIG_DFL)


class Waiter(threading.Thread):
    """Waits (long polls) until the process is idle; keeps the final record or the error."""

    def __init__(self, client: Client, process_id: int) -> None:
        super().__init__(name="stablehand-wait", daemon=True)
        self.client, self.process_id = client, process_id
        self.record: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self.record = self.client.wait(self.process_id)
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()


def _on_interrupt(client: Client, process_id: int, nth: int) -> bool:
    """Act on the nth Ctrl-C; False when the CLI should leave now."""
    try:
        if nth == 1:
            client.signal(process_id, "SIGINT")
            say(f"sent SIGINT to process {process_id}; Ctrl-C again to stop it")
        elif nth == 2:
            record = client.stop(process_id)
            grace = record.get("grace")
            say(f"stopping process {process_id} (SIGTERM, then SIGKILL after "
                f"{'its grace' if grace is None else f'{grace:g}s'}); Ctrl-C again to leave it")
        else:
            say(f"left process {process_id}; the daemon goes on stopping it")
            return False
    except ApiError as exc:   # it ended meanwhile (409): the waiter is about to see it
        say(f"process {process_id}: {exc.message}")
    return True


def attach(client: Client, record: dict[str, Any], stream_output: bool) -> tuple[int, dict[str, Any] | None]:
    """Wait for a started process, streaming its output, forwarding Ctrl-C (see the module's
    docstring). Returns (exit code, final record or None if the CLI left before the end)."""
    process_id = int(record["id"])
    waiter = Waiter(client, process_id)
    with Interrupts() as interrupts:   # before any output: whoever sees output can press Ctrl-C
        pumps = start_pumps(client, process_id, {"stdout": 0, "stderr": 0}, follow=True) \
            if stream_output else []
        waiter.start()
        handled = 0
        while not waiter.done.wait(0.1):
            while handled < interrupts.count:
                handled += 1
                if not _on_interrupt(client, process_id, handled):
                    return 130, None
    if isinstance(waiter.error, ApiError) and _shutting_down(waiter.error):   # it goes on
        raise ConnectionFailed(waiter.error.message) from waiter.error
    if waiter.error is not None:
        raise waiter.error
    final = waiter.record
    assert final is not None
    for pump in pumps:
        pump.join(JOIN_AFTER_IDLE)
    error = _first_error(pumps)
    if isinstance(error, (ConnectionFailed, BrokenPipeError)):
        raise error
    report_end(final)
    return exit_code_of(final), final


def _shutting_down(error: ApiError) -> bool:
    """Whether a long poll was answered 503 because the daemon began to shut down."""
    return error.status == 503 and "shutting down" in error.message


def report_end(record: dict[str, Any]) -> None:
    """Say on stderr why a process ended when its exit code alone would not."""
    process_id = record["id"]
    if (error := not_started_error(record)) is not None:
        say(f"process {process_id} failed: {error}")
    elif record.get("exitState") == "timeout":
        limit = record.get("timeout")
        after = f" after {limit:g}s" if isinstance(limit, (int, float)) else ""
        say(f"process {process_id} timed out{after} and was stopped")
