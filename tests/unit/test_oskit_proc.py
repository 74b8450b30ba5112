"""oskit's /proc parsing and the tree walk that decides which processes a stop reaches.

``_parse_stat`` is checked on stat lines whose command name (field 2) holds spaces and
parentheses, crafted and real: a child exec'd through a symlink named like the fields
that follow, which a parser splitting at the first ``)`` would misread. ``tree_of`` is a
pure function of a process table, so its rules (descendants by parent links; group and
session members only while the leader's pid cannot have been reused; nothing that
started before the leader) are checked on tables written out here.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from daemon.oskit import (
    ProcInfo,
    children_of,
    descendants,
    environ_marker,
    is_alive,
    proc_info,
    proc_table,
    start_ticks,
    tree_of,
)
from daemon.oskit.proc import _parse_stat, parse_environ
from tests.helpers import wait_for

# Fields 3 to 22 of a stat line, after "pid (comm) ": state, ppid, pgrp, session, ... starttime.
TAIL = b"S 41 42 43 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 200"


@pytest.mark.parametrize("comm", [
    b"sleep", b"a b", b"(paren", b"paren)", b"a) Z 1 2 (b", b")", b"((", b"", b"\xff\xfe",
])
def test_parse_stat_splits_after_the_last_parenthesis(comm: bytes) -> None:
    info = _parse_stat(7, b"7 (" + comm + b") " + TAIL + b"\n")
    assert info == ProcInfo(pid=7, ppid=41, pgrp=42, session=43, start_ticks=123456, zombie=False)


@pytest.mark.parametrize(("state", "zombie"), [
    (b"R", False), (b"S", False), (b"D", False), (b"T", False), (b"t", False), (b"I", False),
    (b"Z", True), (b"X", False),
])
def test_parse_stat_zombie_is_state_z_alone(state: bytes, zombie: bool) -> None:
    info = _parse_stat(7, b"7 (x) " + state + TAIL[1:])
    assert info.zombie is zombie


@pytest.mark.parametrize("data", [b"", b"7 (x)", b"7 x S 1 2 3", b"7 (x) S one 2 3 " + TAIL[14:]])
def test_parse_stat_refuses_a_truncated_or_garbled_line(data: bytes) -> None:
    with pytest.raises((ValueError, IndexError)):
        _parse_stat(7, data)


def test_our_own_stat_line() -> None:
    info = proc_info(os.getpid())
    assert info is not None
    assert (info.pid, info.ppid, info.pgrp, info.session) == \
        (os.getpid(), os.getppid(), os.getpgrp(), os.getsid(0))
    assert not info.zombie and info.start_ticks > 0
    assert start_ticks(os.getpid()) == info.start_ticks


def test_a_child_named_like_stat_fields_reads_right_alive_and_as_a_zombie(tmp_path: Path) -> None:
    decoy = tmp_path / "a) Z 1 2 (b"  # the kernel names the process after this basename
    decoy.symlink_to("/bin/sleep")
    child = subprocess.Popen([str(decoy), "60"], start_new_session=True)
    try:
        wait_for(lambda: Path(f"/proc/{child.pid}/comm").read_text() == decoy.name + "\n",
                 what="the child to exec")
        info = proc_info(child.pid)
        assert info is not None
        assert (info.pid, info.ppid, info.pgrp, info.session) == \
            (child.pid, os.getpid(), child.pid, child.pid)
        assert not info.zombie
        assert is_alive(child.pid, info.start_ticks)
        assert not is_alive(child.pid, info.start_ticks + 1)   # a recycled pid is not the same
        assert child.pid in children_of(os.getpid())

        child.kill()
        zombie = wait_for(lambda: (z := proc_info(child.pid)) is not None and z.zombie and z,
                          what="the child to be a zombie")
        assert zombie.start_ticks == info.start_ticks
        assert not is_alive(child.pid, info.start_ticks)   # a zombie counts as gone
    finally:
        child.kill()
        child.wait()
    assert not is_alive(child.pid, info.start_ticks)   # reaped: gone for good


def test_descendants_follow_parent_links_down_a_real_tree() -> None:
    # sh -> sh -> sleep: the middle shell must fork (two commands), so the tree is 3 deep.
    shell = subprocess.Popen(["sh", "-c", "sh -c 'sleep 60; true' & wait"], start_new_session=True)
    try:
        ticks = start_ticks(shell.pid)
        assert ticks is not None
        found = wait_for(lambda: len(d := descendants(shell.pid, ticks)) == 2 and d,
                         what="the shell's two descendants")
        middle, leaf = sorted(found, key=lambda info: info.ppid == shell.pid, reverse=True)
        assert middle.ppid == shell.pid and leaf.ppid == middle.pid
        # The root must still be the process that started at those ticks: another start
        # time (a recycled pid) or unknown ticks find nothing, never a stranger's children.
        assert descendants(shell.pid, ticks + 1) == []
        assert descendants(shell.pid, -1) == []
    finally:
        os.killpg(shell.pid, 9)
        shell.wait()


# --- environments and the process table, read from /proc without psutil --------------------

@pytest.mark.parametrize(("block", "env"), [
    (b"A=1\0B=two words\0", {"A": "1", "B": "two words"}),
    (b"A=b=c\0", {"A": "b=c"}),                          # split at the first '='
    (b"=x\0noequals\0A=1\0", {"A": "1"}),                # no name, no '=': skipped
    (b"A=1\0A=2\0", {"A": "2"}),
    (b"A=\0", {"A": ""}),
    (b"A=1\0\0B=2\0", {"A": "1"}),                      # an empty entry ends the block
    (b"A=1\0B=2", {"A": "1"}),                           # so does a last entry without its NUL
    (b"\0A=1\0", {}),
    (b"", {}),
    (b"K=\xff\xfe\0", {"K": "\udcff\udcfe"}),             # undecodable bytes kept as surrogates
])
def test_parse_environ_reads_a_block_as_psutil_did(block: bytes, env: dict[str, str]) -> None:
    assert parse_environ(block) == env


def test_environ_marker_of_a_real_child_and_of_a_gone_one() -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "STABLEHAND_ID": "42", "OTHER": "a=b"}
    child = subprocess.Popen(["sleep", "60"], env=env)
    try:
        wait_for(lambda: environ_marker(child.pid, ["STABLEHAND_ID"]) is not None,
                 what="the child's environment")
        assert environ_marker(child.pid, ["STABLEHAND_ID", "OTHER", "MISSING"]) == \
            {"STABLEHAND_ID": "42", "OTHER": "a=b"}
        assert environ_marker(child.pid, ["MISSING"]) == {}
    finally:
        child.kill()
        child.wait()
    assert environ_marker(child.pid, ["STABLEHAND_ID"]) is None   # gone: cannot be told


def test_environ_marker_of_an_empty_environment_is_unknown() -> None:
    child = subprocess.Popen(["/bin/sleep", "60"], env={})
    try:
        wait_for(lambda: Path(f"/proc/{child.pid}/comm").read_text() == "sleep\n", what="exec")
        assert environ_marker(child.pid, ["STABLEHAND_ID"]) is None
    finally:
        child.kill()
        child.wait()


def test_proc_table_lists_every_process_in_pid_order() -> None:
    child = subprocess.Popen(["sleep", "60"])
    try:
        table = proc_table()
        pids = [info.pid for info in table]
        assert pids == sorted(pids)
        assert {os.getpid(), child.pid} <= set(pids)
        assert next(info for info in table if info.pid == child.pid).ppid == os.getpid()
    finally:
        child.kill()
        child.wait()


# --- tree_of on written-out tables ---------------------------------------------------------

LEADER, TICKS = 100, 1000


def _p(pid: int, ppid: int, pgrp: int, session: int, ticks: int) -> ProcInfo:
    return ProcInfo(pid=pid, ppid=ppid, pgrp=pgrp, session=session, start_ticks=ticks)


LEADER_ROW = _p(LEADER, 1, LEADER, LEADER, TICKS)
CHILD = _p(101, LEADER, LEADER, LEADER, 1001)            # a plain child
GRANDCHILD = _p(102, 101, 102, LEADER, 1002)             # in a group of its own
ORPHAN_IN_GROUP = _p(103, 1, LEADER, LEADER, 1003)       # re-parented to init, still in the group
ITS_CHILD = _p(105, 103, 105, 105, 1005)                 # below an orphan, in its own session
ESCAPED = _p(104, 1, 104, 104, 1004)                     # setsid'd orphan: no link left
STRANGER = _p(200, 1, 200, 200, 900)                     # someone else's
OLDER = _p(106, LEADER, LEADER, LEADER, 999)             # started before the leader: a pid reused
SESSION_ONLY = _p(107, 1, 107, LEADER, 1007)             # own group, the leader's session
TREE = [LEADER_ROW, CHILD, GRANDCHILD, ORPHAN_IN_GROUP, ITS_CHILD, ESCAPED, STRANGER, OLDER,
        SESSION_ONLY]


def _pids(table: list[ProcInfo], reaped: bool = False, ticks: int = TICKS) -> set[int]:
    found = tree_of(LEADER, ticks, reaped, table)
    assert len(found) == len({info.pid for info in found}), "a process listed twice"
    return {info.pid for info in found}


def test_tree_of_a_live_leader() -> None:
    assert _pids(TREE) == {101, 102, 103, 105, 107}


def test_tree_of_a_reaped_leader_whose_pid_is_free_trusts_its_group_and_session() -> None:
    rest = [row for row in TREE if row.pid != LEADER]
    rest = [_p(101, 1, LEADER, LEADER, 1001) if row.pid == 101 else row for row in rest]
    assert _pids(rest, reaped=True) == {101, 102, 103, 105, 107}


def test_tree_of_a_reaped_leader_whose_pid_was_reused_is_empty() -> None:
    reused = [_p(LEADER, 1, 300, 300, 5000) if row.pid == LEADER else row for row in TREE]
    assert _pids(reused, reaped=True) == set()


def test_tree_of_a_leader_reaped_by_us_but_still_listed_is_not_trusted() -> None:
    assert _pids(TREE, reaped=True) == set()


def test_tree_of_a_leader_whose_start_ticks_differ_is_someone_else() -> None:
    assert _pids(TREE, ticks=TICKS + 1) == set()


def test_tree_of_excludes_the_leader_and_ends_on_a_parent_loop() -> None:
    # /proc is read process by process, so a table can be inconsistent; the walk still ends.
    looped = [LEADER_ROW, _p(101, 102, LEADER, LEADER, 1001), _p(102, 101, 102, 102, 1002)]
    assert _pids(looped) == {101, 102}


def test_tree_of_a_lone_leader_is_empty() -> None:
    assert _pids([LEADER_ROW, STRANGER]) == set()
