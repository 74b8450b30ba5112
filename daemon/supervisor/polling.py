"""Exec-then-poll, for models (issue 20): the output a consumer has not seen yet.

``POST /processes/{id}/poll`` (and a start with ``yieldMs``) writes its ``input``
to stdin, waits server-side up to ``yieldMs`` and answers with the output that
arrived since this consumer's last poll, capped at ``maxBytes``. The facade
(``Supervisor.poll``) does the writing and the waiting; this module keeps the
cursors and reads.

Decisions:

* **When it answers: Codex's rule, unrefined.** As soon as the process has ended
  (its record is idle), else once ``yieldMs`` has passed; never early because
  output went quiet. A caller can then tell from the time taken alone which of
  the two happened, and a model that wants the output sooner asks for a shorter
  yield.
* **Cursors** live here, in memory, one per (record id, consumer): an offset per
  stream. At most MAX_CURSORS (10,000), the least recently used dropped first (its
  consumer then starts again from the first byte kept); a record's cursors go
  with its deletion; none survive a daemon restart (a consumer then sees
  everything again: more rather than less). Two polls of one cursor at once take
  turns (a lock per cursor), so nothing is given twice or skipped. The cursor
  moves past everything that arrived, shown or not: what the cap left out stays
  readable by range (``GET /processes/{id}/output``).
* **Consumers.** The default is the caller's identity as the HTTP layer knows it
  (the token, the Unix peer's uid, the TCP peer's address); a named consumer has
  its own cursor. The names are opaque here.
* **Order.** When both streams have new bytes they are merged by arrival time
  with the keeper's arrival index (:mod:`daemon.output_times`): each stream is cut
  into pieces at its index records, and the pieces are ordered by the time by
  which they had arrived (10 ms resolution; stdout first on a tie). The keeper
  writes a record within 10 ms of the bytes, so the merge waits up to INDEX_HOLD
  for the index to cover what it read; bytes it still does not cover (or a
  stream without an index) come after those with a time, stdout first. With
  new bytes in one stream only, the index is not read.
* **Text.** Each stream is decoded as UTF-8 by its own incremental decoder, so a
  character split between two pieces is whole; invalid bytes become U+FFFD. A
  character whose last bytes have not arrived yet is left for the next poll (the
  cursor stops before it) unless the process has ended.
* **The cap.** ``output`` is at most ``maxBytes`` bytes as UTF-8. When more
  arrived, it is the first and the last half of what fits, each cut at a
  character boundary, with a line ``[... N bytes omitted ...]`` between them
  (N counts the output's bytes left out; for the part never read, the bytes the
  process wrote). Only the head and the tail are read from disk (at most
  ``maxBytes`` each, in bounded chunks off the loop), never all that arrived.
  Bytes the output cap (``max_output_bytes``) dropped before a poll could read
  them are told by the same marker line, first. ``truncated`` is true when
  either marker is there.
"""

from __future__ import annotations

import asyncio
import bisect
import codecs
import collections
import dataclasses
import time
from typing import Any

from ..errors import Unavailable
from ..model import Process, State
from ..output import STREAMS, OutputOverrun, OutputStore
from ..output_times import ArrivalTimes

MAX_CURSORS = 10_000
INDEX_HOLD = 0.05         # seconds a merge waits for the keeper's index to cover its bytes
INDEX_STEP = 0.01
READ_ATTEMPTS = 5         # reads racing the output cap's drops, before giving up (503)
_NOT_YET = 1 << 62        # the "time" of bytes past a stream's last index record
_MARKER = "[... {} bytes omitted ...]\n"

Piece = tuple[int, int, int, int]   # (arrival ms, stream index, start, end)
Decoder = codecs.IncrementalDecoder


@dataclasses.dataclass(slots=True)
class Poll:
    """One poll's answer: the output, and the record as the poll left it."""

    output: str
    truncated: bool
    record: Process

    def to_json(self) -> dict[str, Any]:
        record = self.record
        return {"output": self.output, "truncated": self.truncated,
                "exited": record.state is State.IDLE, "exitCode": record.exit_code,
                "exitSignal": record.exit_signal, "state": record.state.value}


@dataclasses.dataclass(slots=True, eq=False)
class Cursor:
    offsets: list[int]
    lock: asyncio.Lock


class Polls:
    """The cursors, and the reads that move them."""

    def __init__(self, outputs: OutputStore, max_cursors: int = MAX_CURSORS) -> None:
        self._outputs = outputs
        self._max = max_cursors
        self._cursors: collections.OrderedDict[tuple[int, str], Cursor] = collections.OrderedDict()
        self._by_record: dict[int, set[str]] = {}

    def __len__(self) -> int:
        return len(self._cursors)

    def forget(self, process_id: int) -> None:
        """The record was deleted: its cursors go."""
        for consumer in self._by_record.pop(process_id, ()):
            self._cursors.pop((process_id, consumer), None)

    def _cursor(self, process_id: int, consumer: str) -> Cursor:
        key = (process_id, consumer)
        cursor = self._cursors.get(key)
        if cursor is None:
            cursor = self._cursors[key] = Cursor([0] * len(STREAMS), asyncio.Lock())
            self._by_record.setdefault(process_id, set()).add(consumer)
            while len(self._cursors) > self._max:
                (old_id, old_consumer), _ = self._cursors.popitem(last=False)
                consumers = self._by_record.get(old_id)
                if consumers is not None:
                    consumers.discard(old_consumer)
                    if not consumers:
                        del self._by_record[old_id]
        else:
            self._cursors.move_to_end(key)
        return cursor

    async def read(self, record: Process, consumer: str, max_bytes: int) -> Poll:
        """What arrived since ``consumer``'s last poll of ``record``, capped; moves its cursor."""
        cursor = self._cursor(record.id, consumer)
        async with cursor.lock:
            for _ in range(READ_ATTEMPTS):
                try:
                    output, truncated, offsets = await self._read(record, cursor.offsets, max_bytes)
                except OutputOverrun:
                    continue   # the cap dropped bytes while they were read: look again
                cursor.offsets = offsets
                return Poll(output, truncated, record)
        raise Unavailable(f"process {record.id} writes faster than its output can be read; "
                          "poll again")

    async def _read(self, record: Process, offsets: list[int],
                    max_bytes: int) -> tuple[str, bool, list[int]]:
        final = record.state is State.IDLE
        spans: list[tuple[int, int]] = []
        dropped = 0
        readers = [self._outputs.reader(record.id, stream) for stream in STREAMS]
        for reader, offset in zip(readers, offsets, strict=True):
            end = await reader.size()
            start = max(offset, await reader.dropped())
            dropped += start - offset
            spans.append((start, max(start, end)))
        pieces = await self._pieces(record.id, spans)
        total = sum(end - start for _, _, start, end in pieces)
        if total <= 2 * max_bytes:
            head, tail = pieces, []
        else:
            head, tail = _window(pieces, max_bytes, last=False), _window(pieces, max_bytes, last=True)
        data = {}
        for name, window in (("head", head), ("tail", tail)):
            for index, reader in enumerate(readers):
                mine = [(start, end) for _, i, start, end in window if i == index]
                if mine:
                    base, stop = mine[0][0], mine[-1][1]
                    data[name, index] = (base, b"".join([c async for c in reader.chunks(base, stop)]))
        # A stream's first bytes may end a character whose head was dropped (by the cap
        # before this poll, or as the omitted middle, for the tail): those are skipped.
        cut = [start > offset for (start, _), offset in zip(spans, offsets, strict=True)]
        head_text, head_decoders, lost = _decode(head, data, "head", cut)
        dropped += lost
        tail_text, middle = "", 0
        tail_decoders: list[Decoder] = []
        if tail:
            firsts = {i: start for _, i, start, _ in reversed(tail)}
            cut = [i in firsts and (firsts[i] > spans[i][0] or spans[i][0] > offsets[i])
                   for i in range(len(STREAMS))]
            tail_text, tail_decoders, lost = _decode(tail, data, "tail", cut)
            middle = total - 2 * max_bytes + lost
            ends = {i: end for _, i, _, end in head}    # a character the head's end cut is
            middle += sum(len(head_decoders[i].getstate()[0])   # in the middle too
                          for i, end in ends.items() if end != spans[i][1])
        # Where each stream's last byte was decoded decides what is left of it: a character
        # not complete yet waits for the next poll (or, once the process ended, is U+FFFD).
        left = [0] * len(STREAMS)
        for window, decoders in ((head, head_decoders), (tail, tail_decoders)):
            for _, i, _, end in window:
                if end != spans[i][1]:
                    continue
                if final:
                    flushed = decoders[i].decode(b"", final=True)
                    if window is tail:
                        tail_text += flushed
                    else:
                        head_text += flushed
                else:
                    left[i] = len(decoders[i].getstate()[0])
        prefix = _MARKER.format(dropped) if dropped else ""
        output, omitted = cap(head_text, middle, tail_text, max_bytes - len(prefix))
        new_offsets = [end - left[i] for i, (_, end) in enumerate(spans)]
        return prefix + output, bool(dropped or omitted), new_offsets

    async def _pieces(self, process_id: int, spans: list[tuple[int, int]]) -> list[Piece]:
        """The new bytes of both streams as pieces in arrival order (see the module doc)."""
        if sum(1 for start, end in spans if end > start) < 2:
            return [(0, i, start, end) for i, (start, end) in enumerate(spans) if end > start]
        times = [ArrivalTimes(self._outputs.path(process_id, stream)) for stream in STREAMS]
        deadline = time.monotonic() + INDEX_HOLD
        while True:
            for arrival in times:
                await arrival.refresh()
            behind = any(arrival.present and arrival.last_end < end
                         for arrival, (_, end) in zip(times, spans, strict=True))
            if not behind or time.monotonic() >= deadline:
                break
            await asyncio.sleep(INDEX_STEP)
        pieces: list[Piece] = []
        for i, (arrival, (start, end)) in enumerate(zip(times, spans, strict=True)):
            ends, stamps = arrival.index.ends, arrival.index.times
            k = bisect.bisect_right(ends, start)      # the first record past ``start``
            position = start
            while position < end:
                if k < len(ends):
                    cut, when = min(ends[k], end), stamps[k]
                else:
                    cut, when = end, _NOT_YET
                pieces.append((when, i, position, cut))
                position, k = cut, k + 1
        pieces.sort()
        return pieces


def _window(pieces: list[Piece], size: int, *, last: bool) -> list[Piece]:
    """The first (or the ``last``) ``size`` bytes of the merged pieces, in order."""
    taken: list[Piece] = []
    room = size
    for when, i, start, end in (reversed(pieces) if last else pieces):
        if room <= 0:
            break
        if end - start > room:
            start, end = (end - room, end) if last else (start, start + room)
        taken.append((when, i, start, end))
        room -= end - start
    return taken[::-1] if last else taken


def _decode(window: list[Piece], data: dict[tuple[str, int], tuple[int, bytes]], name: str,
            cut: list[bool]) -> tuple[str, list[Decoder], int]:
    """The window's pieces as text, each stream through its own decoder; (text, the decoders,
    bytes skipped). A stream marked in ``cut`` starts inside a character: its leading
    continuation bytes (at most 3) are skipped."""
    decoders: list[Decoder] = [codecs.getincrementaldecoder("utf-8")("replace") for _ in STREAMS]
    parts = []
    skipped = 0
    for _, i, start, end in window:
        base, buffer = data[name, i]
        chunk = buffer[start - base:end - base]
        if cut[i]:
            cut[i] = False
            lead = 0
            while lead < min(3, len(chunk)) and 0x80 <= chunk[lead] <= 0xBF:
                lead += 1
            chunk, skipped = chunk[lead:], skipped + lead
        parts.append(decoders[i].decode(chunk))
    return "".join(parts), decoders, skipped


def cap(head: str, middle: int, tail: str, max_bytes: int) -> tuple[str, int]:
    """(output, bytes omitted): ``head`` + ``tail`` if they fit in ``max_bytes`` (as UTF-8) and
    nothing (``middle`` bytes) lies between them; else the first and the last half of what
    fits, each cut at a character boundary, with the marker line between them."""
    if not middle:
        whole = head + tail
        encoded = whole.encode()
        if len(encoded) <= max_bytes:
            return whole, 0
        first_bytes = last_bytes = encoded
        total = len(encoded)
    else:
        first_bytes, last_bytes = head.encode(), tail.encode()
        total = len(first_bytes) + middle + len(last_bytes)
    budget = max(0, max_bytes - len(_MARKER.format(total)) - 1)   # 1: a newline before it
    first_size = budget // 2
    last_size = budget - first_size
    # Cut inside a character, the decoder drops its pieces (the text was valid UTF-8).
    first = first_bytes[:first_size].decode("utf-8", "ignore")
    last = last_bytes[max(0, len(last_bytes) - last_size):].decode("utf-8", "ignore") \
        if last_size else ""
    omitted = total - len(first.encode()) - len(last.encode())
    newline = "\n" if first and not first.endswith("\n") else ""
    return first + newline + _MARKER.format(omitted) + last, omitted
