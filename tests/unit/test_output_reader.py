"""OutputReader on real files: bounded chunks, exact ranges, reads off the loop, overrun refused."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.output import READ_CHUNK, OutputOverrun, OutputStore

DATA = bytes(range(256)) * (3 * READ_CHUNK // 256 + 17)   # three chunks and a bit


@pytest.fixture
def store(tmp_path: Path) -> Iterator[OutputStore]:
    store = OutputStore(tmp_path / "output", spares=0)
    with open(store.path(1, "stdout"), "wb") as handle:
        handle.write(DATA)
    yield store
    store.close()


async def test_chunks_are_bounded_and_exact(store: OutputStore) -> None:
    reader = store.reader(1, "stdout", lambda: 0)
    assert await reader.size() == len(DATA)
    chunks = [chunk async for chunk in reader.chunks(5, len(DATA) - 3)]
    assert b"".join(chunks) == DATA[5:-3]
    assert max(len(chunk) for chunk in chunks) == READ_CHUNK
    start, data = await reader.read(10, 10 * READ_CHUNK)
    assert (start, len(data)) == (10, READ_CHUNK)      # never more than a chunk at once
    assert await reader.read(len(DATA) + 5) == (len(DATA) + 5, b"")
    assert await reader.read(2**63 - 1) == (2**63 - 1, b"")


async def test_reads_run_on_the_reader_threads_which_close_with_the_store(store: OutputStore) -> None:
    loop_thread = threading.get_ident()
    reader = store.reader(1, "stdout", lambda: 0)
    await reader.read(0)
    readers = [t for t in threading.enumerate() if t.name.startswith("stablehand-output-read")]
    assert readers and all(t.ident != loop_thread for t in readers)
    store.close()
    assert not any(t.is_alive() for t in readers)
    assert (await reader.read(0, 4))[1] == DATA[:4]     # after close: asyncio's default pool


async def test_a_missing_file_reads_as_empty(store: OutputStore) -> None:
    reader = store.reader(2, "stderr", lambda: 0)
    assert await reader.size() == 0
    assert await reader.read(0) == (0, b"")
    assert [chunk async for chunk in reader.chunks(0, 0)] == []


async def test_reads_start_at_the_dropped_mark(store: OutputStore) -> None:
    reader = store.reader(1, "stdout", lambda: 4096)
    assert await reader.read(0, 10) == (4096, DATA[4096:4106])


async def test_bytes_dropped_while_being_streamed_are_not_sent(store: OutputStore) -> None:
    mark = [0]
    reader = store.reader(1, "stdout", lambda: mark[0])
    sent = []
    with pytest.raises(OutputOverrun):
        async for chunk in reader.chunks(0, len(DATA)):
            sent.append(chunk)
            mark[0] = 2 * READ_CHUNK + 100   # the cap dropped bytes ahead of the reader
    assert sent == [DATA[:READ_CHUNK]]


def test_the_cap_moves_the_mark_at_once_and_frees_blocks_on_a_thread(tmp_path: Path) -> None:
    store = OutputStore(tmp_path / "output", spares=0)
    path = store.path(3, "stdout")
    with open(path, "wb") as handle:
        handle.write(b"x" * (1024 * 1024))
    try:
        mark = store.enforce_cap(3, "stdout", 256 * 1024, 0)
        assert mark == 1024 * 1024 - 128 * 1024
        assert [t for t in threading.enumerate() if t.name.startswith("stablehand-output-punch")]
    finally:
        store.close()  # waits for the punch
    assert os.stat(path).st_blocks * 512 <= 256 * 1024
    assert os.stat(path).st_size == 1024 * 1024   # offsets keep their meaning
