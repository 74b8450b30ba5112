"""Start-up refusals and socket permissions, checked on the real daemon and on disk."""

from __future__ import annotations

import grp
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.system.test_daemon import _unix_call, call


def _serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", "serve", "--state-dir", str(tmp_path / "s"),
                           "--socket", str(tmp_path / "sock"), *args],
                          capture_output=True, text=True, timeout=30)


def test_missing_or_empty_token_file_is_a_config_error(tmp_path: Path) -> None:
    result = _serve(tmp_path, "--token-file", str(tmp_path / "absent"))
    assert result.returncode == 78 and "token_file" in result.stderr
    (tmp_path / "empty").write_text("  \n")
    (tmp_path / "empty").chmod(0o600)
    result = _serve(tmp_path, "--token-file", str(tmp_path / "empty"))
    assert result.returncode == 78 and "empty" in result.stderr


def test_non_loopback_without_token_refuses(tmp_path: Path) -> None:
    result = _serve(tmp_path, "--listen", "0.0.0.0:0", "--token-file", "none")
    assert result.returncode == 78 and "loopback" in result.stderr and "--token-file" in result.stderr


def test_socket_in_a_directory_others_can_write_refuses(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    result = subprocess.run([sys.executable, "-m", "daemon", "serve", "--state-dir", str(tmp_path / "s"),
                             "--socket", str(shared / "sock"), "--listen", "none"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "writable by it alone" in result.stderr


def test_token_on_tcp_not_on_socket_by_default(daemon: Any, tmp_path: Path) -> None:
    (tmp_path / "token").write_text("tok\n")
    (tmp_path / "token").chmod(0o600)  # the daemon refuses a token others can read
    d = daemon("--token-file", str(tmp_path / "token")).start()
    assert call(d, "GET", "/processes")[0] == 401
    assert call(d, "GET", "/processes", unix=True)[0] == 200
    assert (d.socket_path.stat().st_mode & 0o777) == 0o600
    assert (d.socket_path.parent.stat().st_mode & 0o022) == 0


def test_socket_requires_token_when_configured(daemon: Any, tmp_path: Path) -> None:
    (tmp_path / "token").write_text("tok\n")
    (tmp_path / "token").chmod(0o600)  # the daemon refuses a token others can read
    d = daemon("--token-file", str(tmp_path / "token"),
               env={"STABLEHAND_SOCKET_REQUIRES_TOKEN": "true"}).start()
    assert call(d, "GET", "/processes", unix=True)[0] == 401


def test_socket_group_makes_it_0660(daemon: Any) -> None:
    group = grp.getgrgid(os.getgid()).gr_name
    d = daemon(env={"STABLEHAND_SOCKET_GROUP": group}).start()
    info = d.socket_path.stat()
    assert (info.st_mode & 0o777) == 0o660 and info.st_gid == os.getgid()


def test_socket_uid_allow_list(daemon: Any) -> None:
    d = daemon(env={"STABLEHAND_SOCKET_ALLOWED_UIDS": str(os.getuid() + 4242)}).start()
    status, body = _unix_call(d.socket_path, "GET", "/processes", None)
    assert status == 403 and "uid" in body["error"]
    assert call(d, "GET", "/processes")[0] == 200, "TCP is not affected"


def test_unknown_socket_group_is_a_config_error(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "daemon", "serve", "--state-dir", str(tmp_path)],
                            env={**os.environ, "STABLEHAND_SOCKET_GROUP": "no-such-group-xyz"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 78 and "socket_group" in result.stderr
