"""TCP needs a token by default: made on first start, found by the CLI and the client.

Each test runs the real daemon (``python -m daemon serve``) and checks what a user
sees: the file on disk, the log, HTTP statuses, the CLI's output and exit code.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from daemon.client import ApiError, AsyncClient, Client
from tests.helpers import PYTHON
from tests.system.test_daemon import call


def _http(url: str, method: str, body: Any = None, headers: dict[str, str] | None = None) -> int:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _events(log: str, name: str) -> list[dict[str, Any]]:
    found = []
    for line in log.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == name:
            found.append(entry)
    return found


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STABLEHAND_")}
    return subprocess.run([PYTHON, "-m", "daemon", *args], capture_output=True, text=True,
                          timeout=60, env={**clean, **(env or {})}, check=False)


def _kill_all(d: Any) -> None:
    for record in call(d, "GET", "/processes?state=running", unix=True)[1]["processes"]:
        call(d, "POST", f"/processes/{record['id']}/signals/kill", {}, unix=True)
        call(d, "GET", f"/processes/{record['id']}/wait?timeout=20", unix=True)


def test_first_start_creates_a_0600_token_logs_its_path_not_its_value(daemon: Any) -> None:
    d = daemon().start()
    path = d.state_dir / "token"
    token = d.token
    assert token is not None and len(token) >= 43
    info = path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == os.geteuid()
    created = _events(d.log(), "token.created")
    assert [entry["path"] for entry in created] == [str(path)]
    assert token not in d.log()
    assert d.stop() == 0
    # a restart reads the same token back, and does not announce a new one
    d.start()
    assert d.token == token
    assert len(_events(d.log(), "token.created")) == 1
    assert _http(d.url + "/processes", "GET", headers=d.headers()) == 200
    assert token not in d.log()


def test_tcp_without_the_token_is_401_with_it_201_and_the_socket_needs_none(daemon: Any) -> None:
    d = daemon().start()
    body = {"argv": ["sleep", "30"]}
    assert _http(d.url + "/processes", "POST", body) == 401
    assert _http(d.url + "/processes", "POST", body, {"Authorization": "Bearer wrong"}) == 401
    assert _http(d.url + "/processes", "POST", body, d.headers()) == 201
    assert call(d, "POST", "/processes", body, unix=True)[0] == 201   # no token over the socket
    assert _http(d.url + "/healthz", "GET") == 200                      # stays open for probes
    _kill_all(d)


def test_a_world_readable_token_file_stops_start_up_with_78(daemon: Any, tmp_path: Path) -> None:
    d = daemon().start()
    token = d.token
    assert d.stop() == 0
    path = d.state_dir / "token"
    path.chmod(0o644)
    d.start(wait=False)
    assert d.proc is not None and d.proc.wait(30) == 78
    assert str(path) in d.log() and "chmod 600" in d.log()
    assert path.read_text().strip() == token, "the file is left as it was"
    # the same for an explicit --token-file
    explicit = tmp_path / "explicit-token"
    explicit.write_text("explicit\n")
    explicit.chmod(0o640)
    result = subprocess.run([PYTHON, "-m", "daemon", "serve", "--state-dir", str(tmp_path / "s2"),
                             "--socket", "none", "--token-file", str(explicit)],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 78 and str(explicit) in result.stderr


def test_a_token_file_of_another_user_stops_start_up_with_78(daemon: Any) -> None:
    if os.geteuid() != 0:
        import pytest
        pytest.skip("needs root to give a file away")
    d = daemon().start()
    assert d.stop() == 0
    os.chown(d.state_dir / "token", 4242, -1)
    d.start(wait=False)
    assert d.proc is not None and d.proc.wait(30) == 78
    assert "owned by uid 4242" in d.log()


def test_token_file_none_opts_out_on_loopback(daemon: Any) -> None:
    d = daemon("--token-file", "none").start()
    assert not (d.state_dir / "token").exists()
    status = _http(d.url + "/processes", "GET")
    assert status == 200


def test_stablehand_token_prints_it(daemon: Any, tmp_path: Path) -> None:
    d = daemon().start()
    result = _cli("token", "--state-dir", str(d.state_dir))
    assert result.returncode == 0 and result.stdout == d.token + "\n"
    from_env = _cli("token", env={"STABLEHAND_STATE_DIR": str(d.state_dir)})
    assert from_env.returncode == 0 and from_env.stdout == d.token + "\n"
    missing = _cli("token", "--state-dir", str(tmp_path / "nothing-here"))
    assert missing.returncode == 1 and missing.stdout == ""
    assert "no token at" in missing.stderr and str(tmp_path / "nothing-here" / "token") in missing.stderr


def test_the_cli_over_url_finds_the_token_by_itself(daemon: Any, tmp_path: Path) -> None:
    d = daemon().start()
    env = {"STABLEHAND_STATE_DIR": str(d.state_dir)}    # the daemon's state dir, as the daemon sees it
    run = _cli("run", "--url", d.url, "--", "sleep", "30", env=env)
    assert run.returncode == 0, run.stderr
    process_id = int(run.stdout)
    ps = _cli("ps", "--url", d.url, env=env)
    assert ps.returncode == 0 and "sleep 30" in ps.stdout
    # without a token to find it is refused, and says so
    refused = _cli("ps", "--url", d.url, env={"STABLEHAND_STATE_DIR": str(tmp_path / "elsewhere")})
    assert refused.returncode == 1 and "HTTP 401" in refused.stderr
    # an explicit --token-file (or $STABLEHAND_TOKEN) wins; 'none' sends nothing
    token_copy = tmp_path / "copy"
    token_copy.write_text(d.token + "\n")
    assert _cli("ps", "--url", d.url, "--token-file", str(token_copy)).returncode == 0
    assert _cli("ps", "--url", d.url, env={"STABLEHAND_TOKEN": d.token}).returncode == 0
    assert _cli("ps", "--url", d.url, "--token-file", "none", env=env).returncode == 1
    unreadable = _cli("ps", "--url", d.url, "--token-file", str(tmp_path / "absent"))
    assert unreadable.returncode == 1 and "absent" in unreadable.stderr
    assert "Traceback" not in unreadable.stderr
    assert _cli("kill", "--url", d.url, str(process_id), env=env).returncode == 0
    assert _cli("wait", "--url", d.url, str(process_id), env=env).returncode == 128 + 15


async def test_the_python_clients_find_the_token_by_themselves(daemon: Any, monkeypatch: Any) -> None:
    d = daemon().start()
    monkeypatch.setenv("STABLEHAND_STATE_DIR", str(d.state_dir))
    with Client(url=d.url) as sh:
        record = sh.start(["sleep", "30"])
        assert sh.get(record["id"])["state"] == "running"
    async with AsyncClient(url=d.url) as ash:
        assert (await ash.get(record["id"]))["pid"] == record["pid"]
        assert (await ash.kill(record["id"]))["id"] == record["id"]
        await ash.wait(record["id"])
    try:
        Client(url=d.url, token_file="none").list()
        raise AssertionError("expected 401")
    except ApiError as exc:
        assert exc.status == 401


def test_children_never_see_the_token(daemon: Any) -> None:
    d = daemon(env={"STABLEHAND_TOKEN": "from-the-environment"}).start()
    token = d.token
    assert token is not None
    script = "env; ls -l /proc/self/fd/"
    status, created = call(d, "POST", "/processes", {"command": script}, unix=True)
    assert status == 201
    call(d, "GET", f"/processes/{created['id']}/wait?timeout=20", unix=True)
    request = urllib.request.Request(f"{d.url}/processes/{created['id']}/output?stream=stdout",
                                     headers=d.headers())
    with urllib.request.urlopen(request, timeout=30) as response:
        output = response.read().decode()
    assert "PATH=" in output, output            # the script did run
    assert token not in output and "from-the-environment" not in output
    assert str(d.state_dir / "token") not in output and "stablehand.lock" not in output


def test_serve_help_and_token_help_say_how(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "daemon", "token", "--help"], capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 0 and "--state-dir" in result.stdout


def test_no_token_on_a_non_loopback_socket_from_systemd_is_refused(tmp_path: Path) -> None:
    import socket
    listener = socket.socket()
    listener.bind(("0.0.0.0", 0))
    listener.listen(4)
    fd = listener.fileno()
    launcher = (f"import os; os.dup2({fd}, 3); os.close({fd}); "
                "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES='tcp'); "
                f"os.execv({PYTHON!r}, [{PYTHON!r}, '-m', 'daemon', 'serve', '--state-dir', "
                f"{str(tmp_path / 'state')!r}, '--token-file', 'none', '--socket', 'none'])")
    try:
        result = subprocess.run([PYTHON, "-c", launcher], pass_fds=(fd,), capture_output=True,
                                text=True, timeout=30, check=False)
    finally:
        listener.close()
    assert result.returncode == 78 and "loopback" in result.stderr and "0.0.0.0" in result.stderr
