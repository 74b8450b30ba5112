"""The shipped systemd units: the daemon's (stablehand.service) and the keeper's
(stablehand-keeper.service), where every child runs.

Both are hardened (systemd-analyze security under 5.0), valid (systemd-analyze
verify, with and without the example drop-ins), and consistent with what the
daemon and the keeper need and read: the same user and state dir, a syscall filter
that lets the keeper and its children work, and settings that make a restart of
the daemon's unit leave the keeper and the children alone. The last test runs the
two units' command lines and environment for real, as systemd would order them.

systemd-analyze works offline on unit files, so these run without a running systemd;
they skip, saying why, where the tool is not installed. Booting the units for real
(nspawn) is too heavy for the suite; what that showed is written in the units' comments.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from daemon import config
from tests.helpers import DaemonProcess, alive, keeper_of, wait_for
from tests.system.test_daemon import call

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"
SHIPPED_EXEC = "/usr/local/bin/stablehand"
MAX_EXPOSURE = 5.0
DAEMON = "stablehand.service"
KEEPER = "stablehand-keeper.service"
SOCKET = "stablehand.socket"
KEEPER_DEFAULT_GRACE = 10.0   # `stablehand keeper --grace` (daemon/keeper/main.py)
# Running children as root: one drop-in per unit (the keeper answers only its own uid).
ROOT_DROPINS = {KEEPER: "stablehand-keeper-root.conf.example",
                DAEMON: "stablehand-root.conf.example",
                SOCKET: "stablehand-root-socket.conf.example"}

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")

# What the keeper calls (subreaper, pidfds, spawning, reaping, signalling, its lock,
# its journal, hole punching in output files) and what ordinary children need (nice,
# affinity, ulimit, their own seccomp filters).
KEEPER_SYSCALLS = {
    "prctl", "pidfd_open", "pidfd_send_signal", "clone", "clone3", "execve", "execveat",
    "wait4", "waitid", "kill", "tgkill", "flock", "fsync", "fdatasync", "fallocate", "lseek",
    "pipe2", "prlimit64", "setrlimit", "setpriority", "sched_setaffinity", "socket", "bind",
    "listen", "accept4", "getsockopt", "connect", "sendmsg", "epoll_wait", "mmap", "mprotect",
    "seccomp",
}
# What the daemon calls: no exec, but pidfds and signals for the members of a tree,
# its lock and registry, its sockets, threads (aiosqlite).
DAEMON_SYSCALLS = {
    "pidfd_open", "pidfd_send_signal", "kill", "tgkill", "flock", "fsync", "fdatasync",
    "prlimit64", "socket", "bind", "listen", "accept4", "connect", "getsockopt", "sendmsg",
    "recvmsg", "epoll_wait", "mmap", "mprotect", "clone3", "futex", "unlink", "rename",
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


def environment(values: dict[str, list[str]]) -> dict[str, str]:
    """The unit's Environment= assignments, as systemd parses them (quotes, several a line)."""
    return dict(item.split("=", 1) for value in values.get("Environment", [])
                for item in shlex.split(value))


def seconds(span: str) -> float:
    """A systemd time span ("30s", "1min 30s", "90") in seconds."""
    units = {"": 1.0, "s": 1.0, "sec": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span)
    assert parts, span
    return sum(float(number) * units[unit] for number, unit in parts)


def stablehand_script() -> str:
    return shutil.which("stablehand") or str(Path(sys.executable).with_name("stablehand"))


def install(tmp_path: Path, dropins: dict[str, str] | None = None) -> Path:
    """Copy the units (ExecStart pointing at a program that exists here) and drop-ins."""
    for unit in (DAEMON, KEEPER, SOCKET):
        text = (UNITS / unit).read_text().replace(SHIPPED_EXEC, stablehand_script())
        (tmp_path / unit).write_text(text)
    for unit, example in (dropins or {}).items():
        directory = tmp_path / f"{unit}.d"
        directory.mkdir(exist_ok=True)
        shutil.copy(UNITS / example, directory / "example.conf")
    return tmp_path


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
    units = [str(tmp_path / unit) for unit in (DAEMON, KEEPER, SOCKET)]
    result = subprocess.run([ANALYZE, "verify", "--man=no", *units], check=False,
                            capture_output=True,
                            text=True, errors="replace", timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # Unknown keys and bad values are warnings (exit code 0): ours must have none.
    ours = [line for line in result.stderr.splitlines() if str(tmp_path) in line]
    assert not ours, "\n".join(ours)


@needs_analyze
@pytest.mark.parametrize("unit", [DAEMON, KEEPER])
def test_shipped_units_exposure_is_under_five(tmp_path: Path, unit: str) -> None:
    score, report = exposure(install(tmp_path) / unit)
    assert score < MAX_EXPOSURE, report


@needs_analyze
def test_the_daemon_is_held_tighter_than_the_keeper(tmp_path: Path) -> None:
    """The daemon runs no program: what only children need is not the daemon's."""
    install(tmp_path)
    daemon_score, report = exposure(tmp_path / DAEMON)
    keeper_score, _ = exposure(tmp_path / KEEPER)
    assert daemon_score < keeper_score, report
    for line in ("PrivateDevices=", "ProtectClock=", "MemoryDenyWriteExecute=",
                 "SystemCallFilter=~@resources", "ProtectSystem=", "ProtectHome="):
        assert re.search(rf"✓ {re.escape(line)}", report), f"{line} not in force:\n{report}"


@needs_analyze
def test_root_dropins_give_children_root_and_the_daemon_only_what_it_needs(
        tmp_path: Path) -> None:
    """The root examples are a choice to be exposed: the keeper's must lift the limits."""
    install(tmp_path, ROOT_DROPINS)
    _, keeper_report = exposure(tmp_path / KEEPER)
    assert "Service runs as root user" in keeper_report
    assert re.search(r"CAP_SYS_ADMIN\s+Service has administrator privileges", keeper_report)
    assert re.search(r"SystemCallFilter=~@mount\s+Service does not filter system calls",
                     keeper_report)
    score, daemon_report = exposure(tmp_path / DAEMON)
    assert "Service runs as root user" in daemon_report, "the keeper answers only its own uid"
    assert re.search(r"✓ CapabilityBoundingSet=~CAP_SYS_ADMIN", daemon_report)
    assert score < MAX_EXPOSURE, daemon_report


@needs_analyze
@pytest.mark.parametrize("dropins", [None, ROOT_DROPINS], ids=["shipped", "root"])
def test_units_and_dropins_verify_without_warnings(
        tmp_path: Path, dropins: dict[str, str] | None) -> None:
    verify(install(tmp_path, dropins))


def test_every_example_dropin_is_tested() -> None:
    examples = {path.name for path in UNITS.glob("*.example")}
    assert examples == set(ROOT_DROPINS.values())


def expand_filter(groups: dict[str, list[str]], names: list[str]) -> set[str]:
    calls: set[str] = set()
    for name in names:
        if name.startswith("@"):
            calls |= expand_filter(groups, groups[name])
        else:
            calls.add(name)
    return calls


@pytest.fixture(scope="module")
def syscall_groups() -> dict[str, list[str]]:
    if ANALYZE is None:
        pytest.skip("systemd-analyze is not installed")
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
    return groups


def allowed_syscalls(groups: dict[str, list[str]], values: dict[str, list[str]]) -> set[str]:
    """An allow list, then ``~`` entries taken out of it, as systemd reads them."""
    allowed: set[str] = set()
    denied: set[str] = set()
    for entry in values.get("SystemCallFilter", []):
        target = denied if entry.startswith("~") else allowed
        target |= expand_filter(groups, entry.lstrip("~").split())
    return allowed - denied


@pytest.mark.parametrize("unit, needed", [(KEEPER, KEEPER_SYSCALLS), (DAEMON, DAEMON_SYSCALLS)],
                         ids=["keeper-and-children", "daemon"])
def test_syscall_filter_allows_what_the_unit_calls(
        syscall_groups: dict[str, list[str]], unit: str, needed: set[str]) -> None:
    values = directives(UNITS / unit)
    missing = needed - allowed_syscalls(syscall_groups, values)
    assert not missing, f"{unit}: SystemCallFilter= blocks {sorted(missing)}"
    assert last(values, "SystemCallErrorNumber") == "EPERM", "a blocked call must fail, not kill"


def test_daemon_filter_leaves_out_what_only_children_use(
        syscall_groups: dict[str, list[str]]) -> None:
    allowed = allowed_syscalls(syscall_groups, directives(UNITS / DAEMON))
    assert not {"setpriority", "sched_setaffinity", "set_mempolicy"} & allowed


def test_units_run_as_the_dedicated_user_with_their_directories() -> None:
    for unit in (DAEMON, KEEPER):
        values = directives(UNITS / unit)
        assert last(values, "User") == "stablehand", unit
        assert last(values, "Group") == "stablehand", unit
        assert last(values, "DynamicUser") in (None, "no"), unit
        assert "Documentation" not in values, "nothing installs a documentation target"
        assert last(values, "StateDirectory") == "stablehand", unit
        assert last(values, "StateDirectoryMode") == "0700", unit
        assert last(values, "UMask") == "0027", unit
        assert last(values, "Restart") == "on-failure", unit
        assert last(values, "KillMode") == "mixed", unit
        assert last(values, "LimitNOFILE"), unit
    daemon_unit = directives(UNITS / DAEMON)
    assert last(daemon_unit, "RuntimeDirectory") == "stablehand"
    assert last(daemon_unit, "RuntimeDirectoryPreserve") == "yes"
    assert last(daemon_unit, "Type") == "notify"
    assert last(daemon_unit, "NotifyAccess") == "main"
    assert last(daemon_unit, "WatchdogSec")
    keeper_unit = directives(UNITS / KEEPER)
    assert last(keeper_unit, "OOMPolicy") == "continue", "one child's OOM must not stop the rest"
    # Left off on purpose where children run (see the unit's comments): JITs and GPUs.
    assert "MemoryDenyWriteExecute" not in keeper_unit
    assert "PrivateDevices" not in keeper_unit
    sysusers = (UNITS / "stablehand.sysusers.conf").read_text()
    user_line = r"^u\s+stablehand\s+-\s+\".*\"\s+/var/lib/stablehand\s+-\s*$"
    assert re.search(user_line, sysusers, re.MULTILINE)


def keeper_argv(state_dir: str | None = None) -> list[str]:
    """The keeper unit's ExecStart=, runnable here (and on ``state_dir`` if given)."""
    argv = shlex.split(last(directives(UNITS / KEEPER), "ExecStart") or "")
    assert argv[:2] == [SHIPPED_EXEC, "keeper"], argv
    argv[0] = stablehand_script()
    if state_dir is not None:
        argv[argv.index("--state-dir") + 1] = state_dir
    return argv


def test_keeper_serves_the_state_dir_the_daemon_uses() -> None:
    """A keeper of another state dir is refused: ExecStart= must name the daemon's."""
    argv = keeper_argv()
    daemon_unit = directives(UNITS / DAEMON)
    env = {"STATE_DIRECTORY": f"/var/lib/{last(daemon_unit, 'StateDirectory')}"}
    assert argv[argv.index("--state-dir") + 1] == str(config.default_state_dir(env))


def test_keeper_stop_timeout_outlasts_its_grace() -> None:
    argv = keeper_argv()
    grace = float(argv[argv.index("--grace") + 1]) if "--grace" in argv else KEEPER_DEFAULT_GRACE
    timeout = last(directives(UNITS / KEEPER), "TimeoutStopSec")
    assert timeout is not None and seconds(timeout) >= grace + 10, (timeout, grace)


def test_restarting_the_daemon_unit_leaves_keeper_and_children_alone(tmp_path: Path) -> None:
    """The daemon never starts a keeper and detaches on SIGTERM; the keeper is its own unit."""
    daemon_unit = directives(UNITS / DAEMON)
    assert KEEPER in daemon_unit["Requires"] and KEEPER in daemon_unit["After"]
    keeper_unit = directives(UNITS / KEEPER)
    for binding in ("PartOf", "BindsTo", "StopWhenUnneeded", "Requires"):
        assert binding not in keeper_unit, f"{binding}= would tie the keeper to the daemon"
    env = environment(daemon_unit)
    loaded = config.load(flags={"state_dir": str(tmp_path)}, env=env)
    assert loaded.shutdown == "detach"
    assert loaded.keeper == "external"
    assert not any(key.startswith("STABLEHAND_") for key in environment(keeper_unit))


def test_socket_is_where_the_daemon_and_the_cli_look() -> None:
    """The socket unit's path is the daemon's default under systemd and root's default."""
    socket_unit = directives(UNITS / SOCKET)
    paths = [v for v in socket_unit["ListenStream"] if v.startswith("/")]
    env = {"STATE_DIRECTORY": "/var/lib/stablehand", "RUNTIME_DIRECTORY": "/run/stablehand"}
    under_systemd = config.default_socket(env, Path("/var/lib/stablehand"))
    assert paths == [str(under_systemd)]
    assert last(socket_unit, "SocketUser") == "stablehand"
    assert last(socket_unit, "SocketMode") == "0660"
    root_socket = directives(UNITS / SOCKET, UNITS / ROOT_DROPINS[SOCKET])
    assert (last(root_socket, "SocketUser"), last(root_socket, "SocketMode")) == ("root", "0600")


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


# --- the two units' command lines, run as systemd would order them ---------------------

class KeeperUnit:
    """The keeper unit's ExecStart=, started and stopped (SIGTERM, as KillMode=mixed does)."""

    def __init__(self, state_dir: Path, log_path: Path) -> None:
        self.argv = keeper_argv(str(state_dir))
        self.state_dir = state_dir
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> KeeperUnit:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, start_new_session=True)
        wait_for(lambda: keeper_of(self.state_dir) == self.pid, 20, "the keeper to take its lock")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(60)


@pytest.fixture
def two_units(tmp_path: Path) -> Iterator[tuple[KeeperUnit, Any]]:
    state = tmp_path / "state"
    keeper = KeeperUnit(state, tmp_path / "keeper.log")
    env = environment(directives(UNITS / DAEMON))
    daemons: list[DaemonProcess] = []

    def daemon() -> DaemonProcess:
        instance = DaemonProcess(state, env=env)
        daemons.append(instance)
        return instance

    try:
        yield keeper, daemon
    finally:
        for instance in daemons:
            if instance.proc is not None and instance.proc.poll() is None:
                instance.stop()
        if keeper.proc is not None:
            keeper.stop()


def test_the_units_restart_and_stop_as_docs_say(two_units: tuple[KeeperUnit, Any]) -> None:
    """`systemctl restart stablehand` keeps the child; `stop stablehand-keeper` ends it,
    and the next daemon records that exit exactly."""
    keeper, daemon = two_units
    keeper.start()                                   # After=stablehand-keeper.service
    first = daemon().start()
    status, child = call(first, "POST", "/processes", {"argv": ["sleep", "300"]})
    assert status == 201, child
    assert first.proc is not None and psutil.Process(first.proc.pid).children() == [], \
        "the daemon started a keeper of its own"
    assert first.stop() == 0                         # systemctl restart stablehand ...
    assert alive(child["pid"]) and keeper.proc is not None and keeper.proc.poll() is None
    second = daemon().start()                        # ... and the new daemon reconnects
    _, record = call(second, "GET", f"/processes/{child['id']}")
    assert (record["state"], record["pid"]) == ("running", child["pid"])
    assert keeper_of(keeper.state_dir) == keeper.pid
    assert second.stop() == 0                        # systemctl stop stablehand-keeper:
    assert keeper.stop() == 0                        # the daemon first (Requires=), then it
    assert not alive(child["pid"])
    keeper.start()                                   # systemctl start stablehand
    third = daemon().start()
    wait_for(lambda: call(third, "GET", f"/processes/{child['id']}")[1]["state"] == "idle",
             20, "the exit the daemon missed to be recorded")
    _, record = call(third, "GET", f"/processes/{child['id']}")
    assert record["exitSignal"] == "SIGTERM", record
