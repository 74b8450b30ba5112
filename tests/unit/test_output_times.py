"""output_times on index files written here in the keeper's format (16-byte records,
little-endian end offset u64 and unix time ms u64): times of lines, ``since`` offsets, the
``since`` parser, and the stamper a followed stream goes through."""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path

import pytest

from daemon.keeper.pump import punch
from daemon.output_times import MAX_LINE, ArrivalTimes, LineStamper, iso_ms, since_ms

T0 = 1_780_000_000_000          # unix ms, 2026-05-28


def write_index(path: Path, records: list[tuple[int, int]], mode: str = "wb") -> None:
    with open(str(path) + ".idx", mode) as handle:
        handle.write(b"".join(struct.pack("<QQ", end, ms) for end, ms in records))


async def loaded(path: Path) -> ArrivalTimes:
    times = ArrivalTimes(str(path))
    await times.refresh()
    return times


async def test_a_line_gets_the_time_of_the_first_record_at_or_past_its_end(tmp_path: Path) -> None:
    stream = tmp_path / "1.stdout"
    # "a\n" (0-2) and "bb\n" (2-5) arrived by T0; "ccc\n" (5-9) by T0+50; "d\n" (9-11) by T0+90
    write_index(stream, [(5, T0), (9, T0 + 50), (11, T0 + 90)])
    times = await loaded(stream)
    assert times.known and times.last_end == 11
    assert [times.time_of_end(end) for end in (2, 5, 9, 11)] == [T0, T0, T0 + 50, T0 + 90]
    assert times.time_of_end(7) == T0 + 50     # a line ending between records: the next one
    assert times.time_of_end(12) is None       # past the last record: not known yet


async def test_no_index_means_no_times(tmp_path: Path) -> None:
    times = await loaded(tmp_path / "1.stdout")
    assert not times.known
    assert times.time_of_end(10) is None
    assert times.offset_since(T0) is None


async def test_since_starts_at_the_first_byte_that_arrived_at_or_after_it(tmp_path: Path) -> None:
    stream = tmp_path / "1.stdout"
    write_index(stream, [(5, T0), (9, T0 + 50), (11, T0 + 90)])
    times = await loaded(stream)
    assert times.offset_since(T0 - 1) == 0
    assert times.offset_since(T0) == 0          # the first record's bytes arrived by T0, maybe at it
    assert times.offset_since(T0 + 1) == 5
    assert times.offset_since(T0 + 50) == 5
    assert times.offset_since(T0 + 60) == 9
    assert times.offset_since(T0 + 10_000) == 11   # nothing newer (bytes past 11 are newer still)


async def test_a_follower_takes_in_only_the_records_appended_since(tmp_path: Path) -> None:
    stream = tmp_path / "1.stdout"
    write_index(stream, [(5, T0)])
    times = await loaded(stream)
    assert times.time_of_end(9) is None
    write_index(stream, [(9, T0 + 50)], mode="ab")
    with open(str(stream) + ".idx", "ab") as handle:
        handle.write(struct.pack("<QQ", 11, T0 + 90)[:7])   # a record being written: not yet
    await times.refresh()
    assert times.time_of_end(9) == T0 + 50
    assert times.time_of_end(11) is None
    with open(str(stream) + ".idx", "r+b") as handle:
        handle.seek(32)
        handle.write(struct.pack("<QQ", 11, T0 + 90))
    await times.refresh()
    assert times.index.ends == [5, 9, 11] and times.time_of_end(11) == T0 + 90


async def test_an_index_whose_head_was_punched(tmp_path: Path) -> None:
    stream = tmp_path / "1.stdout"
    records = [(10 * (i + 1), T0 + i) for i in range(1024)]     # 16 KiB: four blocks
    write_index(stream, records)
    fd = os.open(str(stream) + ".idx", os.O_RDWR)
    try:
        punch(fd, 0, 8192)                 # the keeper drops the oldest records this way
    finally:
        os.close(fd)
    times = await loaded(stream)
    assert times.index.ends[0] == 10 * 513              # record 512 is the first kept
    assert times.time_of_end(10 * 600) == T0 + 599
    assert times.time_of_end(5) is None                 # before the oldest record kept: unknown
    assert times.offset_since(T0) == 10 * 513           # nothing older is known to be kept


async def test_the_index_is_read_off_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = tmp_path / "1.stdout"
    write_index(stream, [(5, T0)])
    loop_thread = threading.get_ident()
    readers: list[int] = []
    real_pread = os.pread

    def pread(fd: int, n: int, offset: int) -> bytes:
        readers.append(threading.get_ident())
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", pread)
    times = await loaded(stream)
    assert readers and loop_thread not in readers and times.known


@pytest.mark.parametrize(("text", "expected"), [
    ("1780000000", T0),
    ("1780000000.25", T0 + 250),
    ("0", 0),
    ("2026-05-28T20:26:40Z", T0),
    ("2026-05-28T20:26:40.123Z", T0 + 123),
    ("2026-05-28t20:26:40.123456789z", T0 + 123),
    ("2026-05-28 22:26:40+02:00", T0),
    ("2026-05-28T19:56:40.5-00:30", T0 + 500),
    ("2026-05-28T20:26:40.1234567891234Z", T0 + 123),     # any number of digits
    ("2026-05-28T20:26:60Z", T0 + 19_000),                # a leap second counts as :59
    ("99999999999999", 253402300799000),                  # past 9999: nothing is newer
    ("0000-01-01T00:00:00Z", 0),                          # before 1970: everything
])
def test_since_accepts_unix_seconds_and_rfc3339(text: str, expected: int) -> None:
    assert since_ms(text) == expected


@pytest.mark.parametrize("text", [
    "", "-5", "1e9", "10m", "yesterday", "2026-05-28", "2026-05-28T20:26:40",   # no zone
    "2026-13-28T20:26:40Z", "2026-05-28T20:26:40+24:00", "2026-05-28T20:26:40+01:60",
    "2026-02-29T00:00:00Z", "0000-02-30T00:00:00Z", " 1780000000", "1" * 19,
    "2026-W22-4T20:26:40Z", "nan", "inf",
])
def test_since_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError):
        since_ms(text)


def test_iso_ms() -> None:
    assert iso_ms(T0 + 7) == "2026-05-28T20:26:40.007Z"


def _fed(stamper: LineStamper, offset: int, data: bytes) -> bytes:
    stamper.feed(offset, data)
    return stamper.release()


async def test_the_stamper_prefixes_whole_lines_and_holds_a_partial_one(tmp_path: Path) -> None:
    stream = tmp_path / "1.stdout"
    write_index(stream, [(5, T0), (9, T0 + 50)])
    times = await loaded(stream)
    now = T0 + 999
    stamper = LineStamper(times, 0, lambda: now)
    a, b, c, d = (iso_ms(ms).encode() + b" " for ms in (T0, T0, T0 + 50, now))
    assert _fed(stamper, 0, b"a\nbb\ncc") == a + b"a\n" + b + b"bb\n"
    assert stamper.held == b"cc"
    assert _fed(stamper, 7, b"c\nd") == c + b"ccc\n"
    assert stamper.finish() == d + b"d"            # past the index: the fallback, no newline added
    assert stamper.finish() == b""


async def test_the_stamper_ends_a_held_line_at_a_gap_and_cuts_giant_lines(tmp_path: Path) -> None:
    times = await loaded(tmp_path / "1.stdout")     # no index: every line gets the fallback
    stamper = LineStamper(times, 100, lambda: T0, hold=60.0)   # no index file: nothing waits
    stamp = iso_ms(T0).encode() + b" "
    assert _fed(stamper, 100, b"x\npart") == stamp + b"x\n"
    assert _fed(stamper, 5000, b"after\n") == stamp + b"part" + stamp + b"after\n"
    giant = b"y" * (MAX_LINE + 10)
    assert _fed(stamper, 5006, giant) == stamp + giant[:MAX_LINE]
    assert stamper.held == b"y" * 10 and stamper.start == 5006 + MAX_LINE


async def test_a_follower_holds_a_line_until_its_index_record_is_written(tmp_path: Path) -> None:
    """The keeper writes a record within 10 ms of the bytes: a follower that read them
    first waits for it (up to ``hold``), so it stamps what later readers stamp."""
    stream = tmp_path / "1.stdout"
    write_index(stream, [(2, T0)])
    times = await loaded(stream)
    stamper = LineStamper(times, 0, lambda: T0 + 999, hold=60.0)
    assert _fed(stamper, 0, b"a\nbb\n") == iso_ms(T0).encode() + b" a\n"   # "bb" waits
    assert stamper.needs_refresh()
    write_index(stream, [(5, T0 + 7)], mode="ab")
    await times.refresh()
    assert not stamper.needs_refresh()
    assert stamper.release() == iso_ms(T0 + 7).encode() + b" bb\n"
    impatient = LineStamper(times, 5, lambda: T0 + 999, hold=0.0)
    assert _fed(impatient, 5, b"c\n") == iso_ms(T0 + 999).encode() + b" c\n"
    patient = LineStamper(times, 5, lambda: T0 + 999, hold=60.0)
    assert _fed(patient, 5, b"c\n") == b""
    assert patient.finish() == iso_ms(T0 + 999).encode() + b" c\n"   # the follow ended
