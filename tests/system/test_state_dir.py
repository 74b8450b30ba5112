"""The state dir and the socket path, attacked as issue 15 describes, on the real daemon.

Each trick is set up on disk before ``stablehand serve`` starts; the test checks the
exit code, the message, and that what was planted is left exactly as it was.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port, wait_for
from tests.system.test_daemon import call

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give files away")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _failed_start(d: Any) -> int:
    d.start(wait=False)
    assert d.proc is not None
    return d.proc.wait(30)


def _state(tmp_path: Path, mode: int = 0o700) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(mode)
    return state


def _kill_running(d: Any) -> None:
    for record in call(d, "GET", "/processes?state=running", unix=True)[1]["processes"]:
        call(d, "POST", f"/processes/{record['id']}/signals/kill", {}, unix=True)
        call(d, "GET", f"/processes/{record['id']}/wait?timeout=20", unix=True)


def test_a_lock_symlink_is_refused_and_its_target_untouched(daemon: Any, tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("do not truncate me\n")
    (_state(tmp_path) / "stablehand.lock").symlink_to(target)
    d = daemon()
    assert _failed_start(d) == 1
    assert "stablehand.lock" in d.log() and "symlink" in d.log()
    assert target.read_text() == "do not truncate me\n"
    assert not d.socket_path.exists()


@needs_root
def test_a_lock_file_of_another_user_is_refused_untouched(daemon: Any, tmp_path: Path) -> None:
    lock = _state(tmp_path) / "stablehand.lock"
    lock.write_text("theirs\n")
    os.chown(lock, 4242, -1)
    d = daemon()
    assert _failed_start(d) == 1
    assert str(lock) in d.log() and "owned by uid 4242" in d.log()
    assert lock.read_text() == "theirs\n"


def test_an_old_lock_file_of_ours_is_reused(daemon: Any, tmp_path: Path) -> None:
    lock = _state(tmp_path) / "stablehand.lock"
    lock.write_text("99999999 stale\n")
    lock.chmod(0o644)
    d = daemon().start()
    assert d.proc is not None
    assert lock.read_text() == str(d.proc.pid) and _mode(lock) == 0o600


def test_a_regular_file_at_the_socket_path_is_named_and_kept(daemon: Any, tmp_path: Path) -> None:
    planted = tmp_path / "state.sock"
    planted.write_text("not a socket\n")
    d = daemon(socket_path=planted)
    assert _failed_start(d) == 1
    assert str(planted) in d.log() and "not a socket" in d.log()
    assert planted.read_text() == "not a socket\n"


def test_a_failed_start_removes_nothing_it_did_not_create(daemon: Any, tmp_path: Path) -> None:
    # A stale socket from a crashed daemon sits at the path; the TCP port is taken, so the
    # start fails before binding the socket: the stale file is left as it was.
    stale_path = tmp_path / "state.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(stale_path))
    stale.close()
    inode = stale_path.lstat().st_ino
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        d = daemon(socket_path=stale_path, port=busy.getsockname()[1])
        assert _failed_start(d) == 1
    assert "cannot listen" in d.log()
    assert stale_path.lstat().st_ino == inode


def test_a_second_daemon_never_takes_a_live_daemons_socket(daemon: Any) -> None:
    first = daemon().start()
    assert call(first, "GET", "/healthz", unix=True)[0] == 200
    inode = first.socket_path.lstat().st_ino
    # same state dir and socket, another port; then another state dir, same socket
    for second in (daemon(port=free_port()), daemon(state="other", socket_path=first.socket_path)):
        assert _failed_start(second) == 1
        assert "already using" in second.log()
        assert first.socket_path.lstat().st_ino == inode
        assert call(first, "GET", "/processes", unix=True)[0] == 200
    assert first.stop() == 0
    assert not first.socket_path.exists()     # its own exit removes its own socket


def test_exit_leaves_a_socket_path_that_is_no_longer_ours(daemon: Any, tmp_path: Path) -> None:
    d = daemon().start()
    d.socket_path.rename(tmp_path / "moved.sock")
    d.socket_path.write_text("someone else's now\n")
    assert d.stop() == 0
    assert d.socket_path.read_text() == "someone else's now\n"
    assert "socket.replaced" in d.log()


def test_state_dir_and_its_files_are_private(daemon: Any) -> None:
    d = daemon().start()
    status, _ = call(d, "POST", "/processes", {"argv": ["sleep", "30"], "env": {"SECRET": "x"}},
                     unix=True)
    assert status == 201     # a write: the WAL and SHM exist now
    state = d.state_dir
    assert _mode(state) == 0o700
    for name in ("stablehand.db", "stablehand.db-wal", "stablehand.db-shm", "stablehand.lock", "token"):
        path = state / name
        assert path.exists(), name
        assert _mode(path) == 0o600, f"{name} is {_mode(path):04o}"
        assert path.lstat().st_uid == os.geteuid()
    _kill_running(d)


def test_a_looser_state_dir_and_registry_are_tightened(daemon: Any, tmp_path: Path) -> None:
    d = daemon().start()
    assert d.stop() == 0
    # an older Stablehand (or a careless mkdir) left them readable by everyone
    d.state_dir.chmod(0o755)
    (d.state_dir / "stablehand.db").chmod(0o644)
    d.start()
    assert _mode(d.state_dir) == 0o700
    assert "state_dir.tightened" in d.log() and "0755" in d.log()
    assert _mode(d.state_dir / "stablehand.db") == 0o600
    assert "state_dir.file_tightened" in d.log()
    assert call(d, "POST", "/processes", {"argv": ["true"]}, unix=True)[0] == 201
    for name in ("stablehand.db-wal", "stablehand.db-shm"):
        assert _mode(d.state_dir / name) == 0o600


def test_a_new_state_dir_under_a_loose_umask_is_still_private(daemon: Any, tmp_path: Path) -> None:
    d = daemon()
    d.args = ["/bin/sh", "-c", 'umask 000; exec "$@"', "sh", *d.args]
    d.start()
    assert call(d, "POST", "/processes", {"argv": ["true"]}, unix=True)[0] == 201
    assert _mode(d.state_dir) == 0o700
    for name in ("stablehand.db", "stablehand.db-wal", "stablehand.db-shm", "stablehand.lock", "token"):
        assert _mode(d.state_dir / name) == 0o600, name


@needs_root
def test_a_state_dir_of_another_user_is_refused(daemon: Any, tmp_path: Path) -> None:
    state = _state(tmp_path)
    os.chown(state, 4242, 4242)
    d = daemon()
    assert _failed_start(d) == 1
    assert str(state) in d.log() and "owned by uid 4242" in d.log()
    assert os.listdir(state) == []


@needs_root
def test_a_registry_planted_by_another_user_is_refused(daemon: Any, tmp_path: Path) -> None:
    state = _state(tmp_path)
    database = state / "stablehand.db"
    sqlite3.connect(database).close()
    database.chmod(0o600)
    os.chown(database, 4242, 4242)
    d = daemon()
    assert _failed_start(d) == 1
    assert str(database) in d.log() and "owned by uid 4242" in d.log()


def test_a_registry_symlink_is_refused(daemon: Any, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.db"
    elsewhere.write_bytes(b"")
    (_state(tmp_path) / "stablehand.db").symlink_to(elsewhere)
    d = daemon()
    assert _failed_start(d) == 1
    assert "symlink" in d.log() and "stablehand.db" in d.log()
    assert elsewhere.read_bytes() == b""


def test_a_stale_socket_from_a_killed_daemon_is_replaced(daemon: Any) -> None:
    d = daemon().start()
    d.kill9()
    assert d.socket_path.exists()
    d.start()
    wait_for(lambda: call(d, "GET", "/healthz", unix=True)[0] == 200, what="the socket to answer")


def test_an_output_symlink_stops_start_up_with_a_message(daemon: Any, tmp_path: Path) -> None:
    # It hung start-up once (a traceback, then a daemon that never listened).
    target = tmp_path / "precious"
    target.write_text("keep\n")
    (_state(tmp_path) / "output").symlink_to(target)
    d = daemon()
    assert _failed_start(d) == 1
    assert "output dir" in d.log() and "Traceback" not in d.log()
    assert target.read_text() == "keep\n"
