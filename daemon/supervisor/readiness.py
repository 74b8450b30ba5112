"""Readiness of a managed run (``managed.status`` starting -> running), as plain asyncio.

:func:`wait_ready` returns once a run's ready condition holds; the caller
cancels it when the run ends first. Nothing here knows the supervisor, nothing
blocks the event loop.

Readiness by health check ignores ``initial_delay_ms`` and ``failure_threshold``:
it probes every ``poll_ms`` until one passes, so a run is ``running`` as soon as
it answers.

Readiness by log line reads the run's stdout and stderr through an
:class:`OutputSource` (:class:`daemon.output.OutputReader`, the one reader of
output files: in a thread, skipping what the output cap dropped), from offsets
the caller gives (where this run's output starts). Only complete lines match
(``re.search``), at most :data:`MAX_LINE` bytes of each: a longer line is matched
on its head once its newline arrives; a line whose head the cap dropped unread
is not matched. Matching runs in a thread too: the regex is a client's, and a
slow one must not stall the loop.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

import aiohttp

from ..managed import HealthCheck, Ready
from .probes import new_session, probe, tcp

MAX_LINE = 64 * 1024          # bytes of a line kept for matching; the rest of it is cut
READ_BYTES = 64 * 1024        # bytes asked for per output read
READY_CONNECT_MS = 1000       # how long a ``ready.port`` connection attempt may take


class OutputSource(Protocol):
    """Where a run's output is read: :class:`daemon.output.OutputReader` is one."""

    async def read(self, offset: int, limit: int = ...) -> tuple[int, bytes]: ...


async def wait_ready(ready: Ready, *, check: HealthCheck | None, env: Mapping[str, str],
                     cwd: str | None, outputs: Sequence[tuple[OutputSource, int]] = (),
                     poll_ms: int = 50, session: aiohttp.ClientSession | None = None) -> None:
    """Return once the run is ready; the caller cancels it (when the run ends, say).

    * ``ready.port``: ``127.0.0.1:port`` accepts a connection;
    * ``ready.log_line``: a complete line of one of ``outputs`` (each a source and
      the offset this run's output starts at: stdout and stderr) matches the regex;
    * ``ready.health_check``: ``probe(check)`` passes once.

    Checks every ``poll_ms``, start to start. A ``Ready()`` with no condition is met
    at once.
    """
    if ready.port is not None:
        port = ready.port

        async def connects() -> bool:
            try:
                async with asyncio.timeout(READY_CONNECT_MS / 1000):
                    return await tcp(port) is None
            except TimeoutError:
                return False
        await _until(connects, poll_ms)
    elif ready.log_line is not None:
        if not outputs:
            raise ValueError("ready.log_line needs the run's outputs")
        await _until_line(re.compile(ready.log_line), outputs, poll_ms)
    elif ready.health_check:
        if check is None:
            raise ValueError("ready.health_check needs a health check")
        health = check

        async def passes(session: aiohttp.ClientSession | None) -> bool:
            return await probe(health, env=env, cwd=cwd, session=session) is None
        if check.type != "http" or session is not None:
            await _until(lambda: passes(session), poll_ms)
        else:
            async with new_session() as own:
                await _until(lambda: passes(own), poll_ms)


async def _until(attempt: Callable[[], Awaitable[bool]], poll_ms: int) -> None:
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        if await attempt():
            return
        await asyncio.sleep(max(0.0, started + poll_ms / 1000 - loop.time()))


class _Lines:
    """Complete lines of one stream from an offset on, in bounded memory."""

    def __init__(self, source: OutputSource, start: int) -> None:
        self.source = source
        self.position = start
        self.partial = bytearray()   # the line being read, at most MAX_LINE bytes of it
        self.headless = False        # the cap dropped the start of the line being read

    async def read(self) -> tuple[list[bytes], bool]:
        """(the lines completed by the next chunk, whether more may be waiting)."""
        start, data = await self.source.read(self.position, READ_BYTES)
        if start > self.position:    # dropped before we read them: that line has no head
            self.partial.clear()
            self.headless = True
        self.position = start + len(data)
        return self.feed(data), len(data) >= READ_BYTES

    def feed(self, data: bytes) -> list[bytes]:
        lines = []
        at = 0
        while (end := data.find(b"\n", at)) >= 0:
            self.partial += data[at:min(end, at + MAX_LINE - len(self.partial))]
            if not self.headless:
                lines.append(bytes(self.partial))
            self.partial.clear()
            self.headless = False
            at = end + 1
        self.partial += data[at:at + max(0, MAX_LINE - len(self.partial))]
        return lines


def _matches(regex: re.Pattern[str], lines: list[bytes]) -> bool:
    return any(regex.search(line.decode(errors="replace").removesuffix("\r")) for line in lines)


async def _until_line(regex: re.Pattern[str], outputs: Sequence[tuple[OutputSource, int]],
                      poll_ms: int) -> None:
    streams = [_Lines(source, start) for source, start in outputs]
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        for stream in streams:
            more = True
            while more:
                lines, more = await stream.read()
                if lines:
                    matched: bool = await asyncio.to_thread(_matches, regex, lines)
                    if matched:
                        return
        await asyncio.sleep(max(0.0, started + poll_ms / 1000 - loop.time()))
