"""Output capture: the cap holds on disk while a child writes flat out, offsets keep their
meaning, and the index maps offsets to arrival times."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from daemon.keeper.client import ExitEvent, KeeperClient
from daemon.keeper.pump import (
    INDEX_MAX,
    INDEX_RECORD,
    OutputIndex,
    OutputStream,
    first_kept_offset,
    slack_for,
)

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
MiB = 1024 * 1024


def disk_use(path: Path) -> int:
    try:
        return os.stat(path).st_blocks * 512
    except FileNotFoundError:
        return 0


async def next_exit(client: KeeperClient) -> ExitEvent:
    async for event in client.exits():
        return event
    raise AssertionError("no exit")


async def test_yes_under_a_4_mib_cap_stays_within_cap_plus_1_mib(start_keeper: Any, connect: Any) -> None:
    keeper = start_keeper()
    client = await connect(keeper)
    cap = 4 * MiB
    out = keeper.state_dir / "output" / "1.stdout"
    await client.spawn(1, ["yes"], ENV, max_output_bytes=cap, stderr="discard")
    worst = 0
    listed = 0
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        # Data and index together: what the stream costs on disk.
        worst = max(worst, disk_use(out) + disk_use(out.with_name("1.stdout.idx")))
        # The keeper answers while it pumps (a generous deadline: this is not a speed test).
        await asyncio.wait_for(client.list(), 10)
        listed += 1
        await asyncio.sleep(0.1)
    await client.signal(1, signal.SIGKILL)
    event = await asyncio.wait_for(next_exit(client), 10)
    assert event.signal == signal.SIGKILL
    size = out.stat().st_size
    assert size > 4 * cap, "yes should have written far more than the cap in 4 s"
    assert worst <= cap + MiB, f"disk use reached {worst} bytes"
    assert disk_use(out) <= cap + slack_for(cap)
    kept = first_kept_offset(str(out))
    assert kept == event.stdout_dropped and kept % 4096 == 0
    assert cap <= size - kept <= cap + slack_for(cap)
    with out.open("rb") as handle:   # offsets kept their meaning: "y\n" at even offsets
        handle.seek(kept)
        data = handle.read()
    assert len(data) == size - kept and data[:4] == b"y\ny\n" and data.count(b"y\n") == len(data) // 2
    assert event.stdout_lost == 0 and listed >= 20


async def test_a_read_larger_than_the_cap_keeps_only_its_tail(start_keeper: Any, connect: Any) -> None:
    keeper = start_keeper()
    client = await connect(keeper)
    script = "import os\nos.write(1, bytes(range(256)) * 1024)\nos.write(1, b'END')\n"
    await client.spawn(1, [sys.executable, "-c", script], ENV, max_output_bytes=1000)
    event = await asyncio.wait_for(next_exit(client), 10)
    out = keeper.state_dir / "output" / "1.stdout"
    size = out.stat().st_size
    assert size == 256 * 1024 + 3
    kept = first_kept_offset(str(out))
    assert kept == event.stdout_dropped and size - 1000 - 4096 < kept <= size - 1000
    with out.open("rb") as handle:
        handle.seek(kept)
        data = handle.read()
    expected = (bytes(range(256)) * 1024 + b"END")[kept:]
    assert data == expected and disk_use(out) <= 1000 + slack_for(1000)


async def test_the_index_maps_offsets_to_arrival_times(start_keeper: Any, connect: Any) -> None:
    keeper = start_keeper()
    client = await connect(keeper)
    before = time.time() * 1000
    await client.spawn(1, ["sh", "-c", "echo first; sleep 0.3; echo second"], ENV)
    await asyncio.wait_for(next_exit(client), 10)
    after = time.time() * 1000
    index = OutputIndex.load(str(keeper.state_dir / "output" / "1.stdout"))
    first, second = index.time_of(0), index.time_of(len(b"first\n"))
    assert first is not None and second is not None
    assert before - 20 <= first <= second <= after + 20
    assert second - first >= 250   # the child slept 0.3 s between the lines
    assert index.time_of(len(b"first\nsecond\n")) is None   # past the end
    assert index.offset_at(second) == len(b"first\n")
    assert index.offset_at(0) == 0


def test_stream_cap_and_index_bounds_with_a_real_pipe(tmp_path: Path) -> None:
    """The pump alone: 20 MiB through a pipe under a 1 MiB cap, in small writes."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(read_end, False)
    path = tmp_path / "7.stdout"
    stream = OutputStream(read_end, str(path), 1 * MiB)
    buf = bytearray(64 * 1024)
    pattern = bytes(range(251)) * 40   # 10040 bytes: a period that is not a block multiple
    written = 0
    try:
        for _ in range(2100):
            written += os.write(write_end, pattern)
            assert stream.pump(buf)
            stream.last_at -= 1   # every chunk gets its own index record
            stream.flush_index()
            assert disk_use(path) <= 1 * MiB + slack_for(1 * MiB)
            assert disk_use(Path(f"{path}.idx")) <= INDEX_MAX + 4096
    finally:
        os.close(write_end)
    assert not stream.pump(buf)   # EOF
    stream.close()
    assert path.stat().st_size == written
    kept = first_kept_offset(str(path))
    with path.open("rb") as handle:
        handle.seek(kept)
        data = handle.read()
    assert data == (pattern * 2100)[kept:]
    index = OutputIndex.load(str(path))
    assert index.ends[-1] == written and len(index.ends) * INDEX_RECORD.size <= INDEX_MAX
    assert index.time_of(kept) is None or index.ends[0] <= written


def test_first_kept_offset_of_untrimmed_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"hello")
    assert first_kept_offset(str(path)) == 0
    path.write_bytes(b"")
    assert first_kept_offset(str(path)) == 0
    try:
        first_kept_offset(str(tmp_path / "missing"))
    except FileNotFoundError:
        pass
    else:
        raise AssertionError("a missing file is an error")
