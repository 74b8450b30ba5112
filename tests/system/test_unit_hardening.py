"""The shipped systemd units: hardened (systemd-analyze security under 5.0), valid
(systemd-analyze verify, with and without the example drop-ins), and consistent with
what the daemon needs and reads.

systemd-analyze works offline on unit files, so these run without a running systemd;
they skip, saying why, where the tool is not installed. Booting the units for real
(nspawn) is too heavy for the suite; what that showed is written in the unit's comments.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from daemon import config

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"
SHIPPED_EXEC = "/usr/local/bin/stablehand"
MAX_EXPOSURE = 5.0

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")

# What the daemon itself calls (subreaper, pidfds, spawning, reaping, signalling, its
# lock and its registry) and what ordinary children need (nice, affinity, ulimit).
NEEDED_SYSCALLS = {
    "prctl", "pidfd_open", "pidfd_send_signal", "clone", "clone3", "execve", "execveat",
    "wait4", "waitid", "kill", "tgkill", "flock", "fsync", "fdatasync", "prlimit64",
    "setrlimit", "setpriority", "sched_setaffinity", "socket", "connect", "sendmsg",
    "epoll_wait", "mmap", "mprotect", "seccomp",
}


def directives(*paths: Path) -> dict[str, list[str]]:
    """Every ``Key=value`` of the files, in order (later files act as drop-ins).

    An empty assignment resets the list, as systemd does for list settings.
    """
    values: dict[str, list[str]] = {}
    for path in paths:
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith(("#", ";", "[")):
                continue
            key, _, value = line.partition("=")
            if value.strip():
                values.setdefault(key.strip(), []).append(value.strip())
            else:
                values[key.strip()] = []
    return values


def last(values: dict[str, list[str]], key: str) -> str | None:
    return values[key][-1] if values.get(key) else None


def install(tmp_path: Path, service_dropin: str | None = None,
            socket_dropin: str | None = None) -> Path:
    """Copy the units (ExecStart pointing at a program that exists here) and drop-ins."""
    script = shutil.which("stablehand") or str(Path(sys.executable).with_name("stablehand"))
    for unit in ("stablehand.service", "stablehand.socket"):
        text = (UNITS / unit).read_text().replace(SHIPPED_EXEC, script)
        (tmp_path / unit).write_text(text)
    for unit, example in (("stablehand.service", service_dropin),
                          ("stablehand.socket", socket_dropin)):
        if example is not None:
            dropins = tmp_path / f"{unit}.d"
            dropins.mkdir(exist_ok=True)
            shutil.copy(UNITS / example, dropins / "example.conf")
    return tmp_path / "stablehand.service"


def exposure(service: Path) -> tuple[float, str]:
    assert ANALYZE is not None
    result = subprocess.run([ANALYZE, "security", "--offline=yes", "--no-pager", str(service)],
                            check=False, capture_output=True, text=True, errors="replace",
                            timeout=60, cwd=service.parent)
    report = result.stdout + result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", report)
    assert match, f"no overall exposure in systemd-analyze's report:\n{report}"
    return float(match.group(1)), report


def verify(tmp_path: Path) -> None:
    assert ANALYZE is not None
    units = [str(tmp_path / "stablehand.service"), str(tmp_path / "stablehand.socket")]
    result = subprocess.run([ANALYZE, "verify", "--man=no", *units], check=False,
                            capture_output=True,
                            text=True, errors="replace", timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # Unknown keys and bad values are warnings (exit code 0): ours must have none.
    ours = [line for line in result.stderr.splitlines() if str(tmp_path) in line]
    assert not ours, "\n".join(ours)


@needs_analyze
def test_shipped_service_exposure_is_under_five(tmp_path: Path) -> None:
    score, report = exposure(install(tmp_path))
    assert score < MAX_EXPOSURE, report


@needs_analyze
def test_detach_dropin_keeps_exposure_under_five(tmp_path: Path) -> None:
    score, report = exposure(install(tmp_path, "stablehand-detach.conf.example"))
    assert score < MAX_EXPOSURE, report


@needs_analyze
def test_root_dropin_really_gives_root(tmp_path: Path) -> None:
    """The root example is a choice to be exposed: it must actually lift the limits."""
    _, report = exposure(install(tmp_path, "stablehand-root.conf.example",
                                 "stablehand-root-socket.conf.example"))
    assert "Service runs as root user" in report
    assert re.search(r"CAP_SYS_ADMIN\s+Service has administrator privileges", report)
    assert re.search(r"SystemCallFilter=~@mount\s+Service does not filter system calls", report)


@needs_analyze
@pytest.mark.parametrize("service_dropin, socket_dropin", [
    (None, None),
    ("stablehand-detach.conf.example", None),
    ("stablehand-root.conf.example", "stablehand-root-socket.conf.example"),
])
def test_units_and_dropins_verify_without_warnings(
        tmp_path: Path, service_dropin: str | None, socket_dropin: str | None) -> None:
    install(tmp_path, service_dropin, socket_dropin)
    verify(tmp_path)


def expand_filter(groups: dict[str, list[str]], names: list[str]) -> set[str]:
    calls: set[str] = set()
    for name in names:
        if name.startswith("@"):
            calls |= expand_filter(groups, groups[name])
        else:
            calls.add(name)
    return calls


@needs_analyze
def test_syscall_filter_allows_what_the_daemon_and_children_call() -> None:
    assert ANALYZE is not None
    listing = subprocess.run([ANALYZE, "syscall-filter", "--no-pager"], check=False,
                             capture_output=True,
                             text=True, errors="replace", timeout=60).stdout
    groups: dict[str, list[str]] = {}
    current = ""
    for line in listing.splitlines():
        if not line.strip() or line.strip().startswith("#"):
            continue
        if not line.startswith(" "):
            current = line.strip()
            groups[current] = []
        else:
            groups[current].append(line.strip())
    values = directives(UNITS / "stablehand.service")
    allowed: set[str] = set()
    denied: set[str] = set()
    for entry in values.get("SystemCallFilter", []):
        target = denied if entry.startswith("~") else allowed
        target |= expand_filter(groups, entry.lstrip("~").split())
    missing = NEEDED_SYSCALLS - (allowed - denied)
    assert not missing, f"SystemCallFilter= blocks {sorted(missing)}"
    assert last(values, "SystemCallErrorNumber") == "EPERM", "a blocked call must fail, not kill"


def test_service_runs_as_the_dedicated_user_with_its_directories() -> None:
    values = directives(UNITS / "stablehand.service")
    assert last(values, "User") == "stablehand"
    assert last(values, "DynamicUser") in (None, "no")
    assert "Documentation" not in values, "nothing installs a documentation target"
    assert last(values, "StateDirectory") == "stablehand"
    assert last(values, "StateDirectoryMode") == "0700"
    assert last(values, "RuntimeDirectory") == "stablehand"
    assert last(values, "RuntimeDirectoryPreserve") == "yes"
    assert last(values, "Type") == "notify"
    assert last(values, "NotifyAccess") == "main"
    assert last(values, "WatchdogSec")
    assert last(values, "KillMode") == "mixed"
    assert last(values, "LimitNOFILE")
    assert last(values, "OOMPolicy") == "continue", "one child's OOM must not stop the service"
    # Left off on purpose (see the unit's comments): JITs and GPUs.
    assert "MemoryDenyWriteExecute" not in values
    assert "PrivateDevices" not in values
    sysusers = (UNITS / "stablehand.sysusers.conf").read_text()
    user_line = r"^u\s+stablehand\s+-\s+\".*\"\s+/var/lib/stablehand\s+-\s*$"
    assert re.search(user_line, sysusers, re.MULTILINE)


def test_socket_is_where_the_daemon_and_the_cli_look() -> None:
    """The socket unit's path is the daemon's default under systemd and root's default."""
    socket_unit = directives(UNITS / "stablehand.socket")
    paths = [v for v in socket_unit["ListenStream"] if v.startswith("/")]
    env = {"STATE_DIRECTORY": "/var/lib/stablehand", "RUNTIME_DIRECTORY": "/run/stablehand"}
    under_systemd = config.default_socket(env, Path("/var/lib/stablehand"))
    assert paths == [str(under_systemd)]
    assert last(socket_unit, "SocketUser") == "stablehand"
    assert last(socket_unit, "SocketMode") == "0660"
    root_socket = directives(UNITS / "stablehand.socket",
                             UNITS / "stablehand-root-socket.conf.example")
    assert (last(root_socket, "SocketUser"), last(root_socket, "SocketMode")) == ("root", "0600")


def test_detach_dropin_sets_what_detach_needs(tmp_path: Path) -> None:
    values = directives(UNITS / "stablehand.service", UNITS / "stablehand-detach.conf.example")
    assert last(values, "KillMode") == "process"
    assert last(values, "PrivateTmp") == "no", "survivors would keep an emptied /tmp"
    assert last(values, "RemoveIPC") == "no", "survivors' shared memory would be removed"
    env = dict(item.split("=", 1) for item in values["Environment"])
    loaded = config.load(flags={"state_dir": str(tmp_path)}, env=env)
    assert loaded.shutdown == "detach"


def test_sysusers_snippet_creates_the_user(tmp_path: Path) -> None:
    tool = shutil.which("systemd-sysusers")
    if tool is None:
        pytest.skip("systemd-sysusers is not installed")
    (tmp_path / "etc").mkdir()
    result = subprocess.run([tool, f"--root={tmp_path}", str(UNITS / "stablehand.sysusers.conf")],
                            check=False, capture_output=True, text=True, timeout=60)
    if result.returncode != 0 and "ermission" in result.stderr:
        pytest.skip(f"systemd-sysusers cannot write under {tmp_path}: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    passwd = (tmp_path / "etc" / "passwd").read_text()
    entry = next(line for line in passwd.splitlines() if line.startswith("stablehand:"))
    _, _, uid, gid, _, home, shell = entry.split(":")
    assert int(uid) < 1000 and home == "/var/lib/stablehand" and shell.endswith("nologin")
    assert (tmp_path / "etc" / "group").read_text().startswith(f"stablehand:x:{gid}:")
