"""OutputReader on real files: bounded chunks, exact ranges, reads off the loop, overrun refused."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.keeper.pump import punch
from daemon.output import READ_CHUNK, OutputOverrun, OutputStore

DATA = bytes(range(256)) * (3 * READ_CHUNK // 256 + 17)   # three chunks and a bit


@pytest.fixture
def store(tmp_path: Path) -> Iterator[OutputStore]:
    store = OutputStore(tmp_path / "output")
    with open(store.path(1, "stdout"), "wb") as handle:
        handle.write(DATA)
    yield store
    store.close()


async def test_chunks_are_bounded_and_exact(store: OutputStore) -> None:
    reader = store.reader(1, "stdout")
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
    reader = store.reader(1, "stdout")
    await reader.read(0)
    readers = [t for t in threading.enumerate() if t.name.startswith("stablehand-output-read")]
    assert readers and all(t.ident != loop_thread for t in readers)
    store.close()
    assert not any(t.is_alive() for t in readers)
    assert (await reader.read(0, 4))[1] == DATA[:4]     # after close: asyncio's default pool


async def test_a_missing_file_reads_as_empty(store: OutputStore) -> None:
    reader = store.reader(2, "stderr")
    assert await reader.size() == 0
    assert await reader.read(0) == (0, b"")
    assert [chunk async for chunk in reader.chunks(0, 0)] == []


def _drop_head(store: OutputStore, end: int) -> None:
    """What the keeper's cap does: punch the oldest bytes out, keeping the size."""
    fd = os.open(store.path(1, "stdout"), os.O_WRONLY)
    try:
        punch(fd, 0, end)
    finally:
        os.close(fd)


async def test_reads_start_at_the_first_byte_kept(store: OutputStore) -> None:
    reader = store.reader(1, "stdout")
    assert await reader.dropped() == 0
    _drop_head(store, 4096)
    assert await reader.dropped() == 4096
    assert await reader.read(0, 10) == (4096, DATA[4096:4106])
    assert await reader.read(5000, 10) == (5000, DATA[5000:5010])
    assert await reader.size() == len(DATA)      # offsets keep their meaning


async def test_bytes_dropped_while_being_streamed_are_not_sent(store: OutputStore) -> None:
    reader = store.reader(1, "stdout")
    sent = []
    with pytest.raises(OutputOverrun):
        async for chunk in reader.chunks(0, len(DATA)):
            sent.append(chunk)
            _drop_head(store, 2 * READ_CHUNK + 4096)   # the cap dropped bytes ahead of the reader
    assert sent == [DATA[:READ_CHUNK]]
