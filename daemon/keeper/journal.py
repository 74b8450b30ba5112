"""The exit journal: every exit the daemon has not acknowledged, on disk before it is told.

``<state_dir>/keeper/exits.journal`` is JSON lines: ``{"exit": {id, pid, code,
signal, time, ...}}`` for an exit, ``{"ack": [ids]}`` when the daemon acknowledged
some. Exits are appended and synced (one ``fdatasync`` for all exits reaped in one
turn of the keeper's loop: the appended bytes and the file size that reaches them,
not the mtime; a quarter less than ``fsync`` here) before any event about them is
sent, so an exit the daemon heard of is never lost by a keeper crash, and one it
did not hear of is sent again to the next daemon that connects.

Acks are appended without fsync: losing one to a crash only means the exit is
delivered again, and the daemon treats exits idempotently by id (it must: an
exit may also arrive both as an event and in a ``list`` reply). When the file
holds many more lines than unacknowledged exits it is compacted: the pending
exits are written to a new file, fsynced, renamed over the old one and the
directory fsynced. At start-up the journal is reloaded (a torn last line from a
crash mid-append is skipped) and compacted.
"""

from __future__ import annotations

import json
import os
from typing import Any

_OPEN = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
COMPACT_SLACK = 1024          # lines beyond the pending exits before compaction


class Journal:
    def __init__(self, path: str) -> None:
        self.path = path
        self.pending: dict[int, dict[str, Any]] = {}    # id -> exit, in journal order
        self._load()
        self._fd = -1
        self._compact()

    def _load(self) -> None:
        try:
            with open(self.path, "rb") as handle:
                lines = handle.read().splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            try:
                entry = json.loads(line)
                if "exit" in entry and isinstance(entry["exit"].get("id"), int):
                    self.pending[entry["exit"]["id"]] = entry["exit"]
                elif "ack" in entry:
                    for exit_id in entry["ack"]:
                        self.pending.pop(exit_id, None)
            except (ValueError, TypeError, AttributeError, RecursionError):
                continue   # a torn line from a crash in the middle of an append

    def append(self, exits: list[dict[str, Any]]) -> None:
        """Record exits durably (one write, one fdatasync). Raises OSError if it cannot."""
        if not exits:
            return
        data = b"".join(json.dumps({"exit": e}, separators=(",", ":")).encode() + b"\n"
                        for e in exits)
        self._write(data)
        os.fdatasync(self._fd)   # the data and the size that reaches it; no mtime
        for entry in exits:
            self.pending[entry["id"]] = entry
        self._lines += len(exits)

    def ack(self, ids: list[int]) -> int:
        """Drop acknowledged exits; returns how many were pending."""
        known = [i for i in ids if i in self.pending]
        for exit_id in known:
            del self.pending[exit_id]
        if known:
            try:
                self._write(json.dumps({"ack": known}, separators=(",", ":")).encode() + b"\n")
                self._lines += 1
            except OSError:
                pass   # redelivered after a restart at worst
            if self._lines > 2 * len(self.pending) + COMPACT_SLACK:
                self._compact()
        return len(known)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    def _compact(self) -> None:
        tmp = self.path + ".new"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            data = b"".join(json.dumps({"exit": e}, separators=(",", ":")).encode() + b"\n"
                            for e in self.pending.values())
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, self.path)
        dirfd = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
        self.close()
        self._fd = os.open(self.path, _OPEN, 0o600)
        self._lines = len(self.pending)
