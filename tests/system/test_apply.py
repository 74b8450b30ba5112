"""Services files and the managed-process CLI against a real daemon (issue 19): `apply` in
dependency order, a change restarting only what changed, `--prune`, a cycle refused,
`--dry-run` changing nothing, `serve --services`, and `run --name`, `restart`, `runs`, `ps`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from daemon.client import Client
from tests.helpers import alive, free_port, wait_for
from tests.system.cli_helpers import cli

PY = json.dumps(sys.executable)

SERVER = """
import socket, sys, time
time.sleep(float(sys.argv[2]))            # slow to come up: dependents must wait for it
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen()
print("listening", flush=True)
while True:
    server.accept()[0].close()
"""

# Writes what it found when it started: whether the db answered and the migration had run.
WEB = """
import os, socket, sys, time
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()
    db = "up"
except OSError:
    db = "down"
with open("web.seen", "w") as seen:
    seen.write(f"{db} {os.path.exists('migrated')}")
time.sleep(300)
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def stack(tmp_path: Path, port: int, web_env: str = "1") -> Path:
    """web first in the file: apply must still start it last."""
    write(tmp_path / "server.py", SERVER)
    write(tmp_path / "web.py", WEB)
    return write(tmp_path / "services.toml", f"""
[services.web]
argv = [{PY}, "web.py", "{port}"]
env = {{ VERSION = "{web_env}" }}
depends_on = {{ db = "healthy", migrate = "completed_successfully" }}

[services.db]
argv = [{PY}, "server.py", "{port}", "0.5"]
restart = {{ policy = "on_failure" }}
health_check = {{ type = "tcp", port = {port}, initial_delay_ms = 0, interval_ms = 100, failure_threshold = 50 }}

[services.migrate]
command = "sleep 0.3 && touch migrated"
""")


def newest(sh: Client, name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = sh.list(name=name, limit=1)["processes"]
    assert len(found) == 1, found
    return found[0]


def test_apply_starts_in_dependency_order_each_after_its_conditions(daemon: Any, tmp_path: Path) -> None:
    d = daemon().start()
    port = free_port()
    result = cli(d, "apply", str(stack(tmp_path, port)))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("db: created (process ")
    assert lines[1].startswith("migrate: created (process ")
    assert lines[-1].startswith("web: created (process ")
    sh = Client(socket_path=d.socket_path)
    db, migrate, web = (newest(sh, name) for name in ("db", "migrate", "web"))
    assert db["id"] < migrate["id"] < web["id"]
    # When web started, the db answered and the migration had completed.
    assert wait_for(lambda: (tmp_path / "web.seen").exists() and (tmp_path / "web.seen").read_text()) \
        == "up True"
    assert migrate["exitState"] == "success"
    assert db["managed"]["healthStatus"] == "healthy"
    assert web["cwd"] == str(tmp_path) and web["ref"].startswith("services:")
    assert web["managed"]["restart"]["policy"] == "never"


def test_a_change_restarts_only_the_changed_service(daemon: Any, tmp_path: Path) -> None:
    d = daemon().start()
    port = free_port()
    assert cli(d, "apply", str(stack(tmp_path, port))).returncode == 0
    sh = Client(socket_path=d.socket_path)
    db, web = newest(sh, "db"), newest(sh, "web")

    stack(tmp_path, port, web_env="2")
    result = cli(d, "apply", str(tmp_path / "services.toml"))
    assert result.returncode == 0, result.stderr
    assert f"db: kept (process {db['id']})" in result.stdout
    assert f"web: restarted (process {newest(sh, 'web')['id']}, was {web['id']})" in result.stdout
    assert newest(sh, "db")["id"] == db["id"] and alive(db["pid"])   # untouched
    old = sh.get(web["id"])
    assert (old["state"], old["exitState"]) == ("idle", "canceled")
    assert not alive(web["pid"])
    assert newest(sh, "web")["state"] == "running"
    # The one-shot migration had ended: it ran again, as a missing service does.
    assert "migrate: created" in result.stdout


def test_prune_stops_only_what_a_services_file_started_and_no_longer_declares(daemon: Any,
                                                                             tmp_path: Path) -> None:
    d = daemon().start()
    write(tmp_path / "both.toml", '[services.keep]\nargv = ["sleep", "300"]\n'
                                  '[services.drop]\nargv = ["sleep", "300"]\n')
    one = write(tmp_path / "one.toml", '[services.keep]\nargv = ["sleep", "300"]\n')
    assert cli(d, "apply", str(tmp_path / "both.toml")).returncode == 0
    sh = Client(socket_path=d.socket_path)
    own = sh.start(["sleep", "300"], name="mine")          # not from a services file
    drop = newest(sh, "drop")

    plain = cli(d, "apply", str(one))
    assert plain.returncode == 0 and "drop" not in plain.stdout
    assert sh.get(drop["id"])["state"] == "running"           # without --prune: left alone

    pruned = cli(d, "apply", "--prune", str(one))
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.splitlines()[0] == f"drop: stopped (process {drop['id']})"
    assert sh.get(drop["id"])["state"] == "idle" and not alive(drop["pid"])
    assert newest(sh, "keep")["state"] == "running"
    assert sh.get(own["id"])["state"] == "running"


def test_a_cycle_or_unknown_dependency_is_refused_before_anything_starts(daemon: Any,
                                                                        tmp_path: Path) -> None:
    d = daemon().start()
    cycle = write(tmp_path / "cycle.toml", '[services.ok]\nargv = ["sleep", "300"]\n'
                  '[services.a]\nargv = ["true"]\ndepends_on = ["b"]\n'
                  '[services.b]\nargv = ["true"]\ndepends_on = { a = "started" }\n')
    result = cli(d, "apply", str(cycle))
    assert result.returncode == 2
    assert "dependency cycle: a -> b -> a" in result.stderr
    unknown = write(tmp_path / "unknown.toml", '[services.a]\nargv = ["true"]\ndepends_on = ["nope"]\n')
    result = cli(d, "apply", str(unknown))
    assert result.returncode == 2 and "unknown service 'nope'" in result.stderr
    assert Client(socket_path=d.socket_path).list()["processes"] == []


def test_dry_run_prints_the_plan_and_changes_nothing(daemon: Any, tmp_path: Path) -> None:
    d = daemon().start()
    write(tmp_path / "first.toml", '[services.a]\nargv = ["sleep", "300"]\n'
                                   '[services.b]\nargv = ["sleep", "300"]\n'
                                   '[services.gone]\nargv = ["sleep", "300"]\n')
    empty = cli(d, "apply", "--dry-run", str(tmp_path / "first.toml"))
    assert empty.stdout.split() == ["create", "a", "create", "b", "create", "gone"]
    sh = Client(socket_path=d.socket_path)
    assert sh.list()["processes"] == []
    assert cli(d, "apply", str(tmp_path / "first.toml")).returncode == 0
    before = sh.list()["processes"]

    second = write(tmp_path / "second.toml", '[services.c]\nargv = ["sleep", "300"]\n'
                                             '[services.a]\nargv = ["sleep", "300"]\n'
                                             '[services.b]\nargv = ["sleep", "301"]\n')
    result = cli(d, "apply", "--dry-run", "--prune", str(second))
    assert result.returncode == 0, result.stderr
    ids = {record["name"]: record["id"] for record in before}
    assert result.stdout.splitlines() == [
        f"stop     gone  (process {ids['gone']}: no longer in the file)",
        "create   c",
        f"keep     a  (process {ids['a']})",
        f"restart  b  (process {ids['b']}: its spec changed)"]
    after = sh.list()["processes"]
    assert [(r["id"], r["state"], r["pid"]) for r in after] == \
        [(r["id"], r["state"], r["pid"]) for r in before]


def test_a_dependency_that_fails_or_never_becomes_healthy_fails_the_apply(daemon: Any,
                                                                         tmp_path: Path) -> None:
    d = daemon().start()
    failing = write(tmp_path / "failing.toml", '[services.setup]\ncommand = "exit 3"\n'
                    '[services.app]\nargv = ["sleep", "300"]\n'
                    'depends_on = { setup = "completed_successfully" }\n')
    result = cli(d, "apply", str(failing))
    assert result.returncode == 1
    assert "app: its dependency setup will never be completed successfully: it ended failed " \
           "(exit code 3)" in result.stderr
    sh = Client(socket_path=d.socket_path)
    assert sh.list(name="app")["processes"] == []            # not started

    broken = write(tmp_path / "broken.toml", '[services.broken]\nargv = ["/no/such/program"]\n')
    result = cli(d, "apply", str(broken))
    assert result.returncode == 1 and "broken: it failed to start: " in result.stderr

    port = free_port()                                        # nothing listens there
    never = write(tmp_path / "never.toml", '[services.dep]\nargv = ["sleep", "300"]\n'
                  f'health_check = {{ type = "tcp", port = {port}, initial_delay_ms = 0, '
                  'interval_ms = 100, failure_threshold = 1000 }\n'
                  '[services.user]\nargv = ["sleep", "300"]\ndepends_on = { dep = "healthy" }\n')
    started = time.monotonic()
    result = cli(d, "apply", "--wait-timeout", "0.5", str(never))
    assert result.returncode == 1
    assert "user: timed out after 0.5s waiting for dep to be healthy" in result.stderr
    assert time.monotonic() - started < 25
    assert sh.list(name="user")["processes"] == []


def test_serve_services_applies_the_file_at_start_up(daemon: Any, tmp_path: Path) -> None:
    port = free_port()
    path = stack(tmp_path, port)
    d = daemon("--services", str(path)).start()
    sh = Client(socket_path=d.socket_path)
    wait_for(lambda: sh.list(name="web")["processes"], timeout=20, what="web to be started")
    wait_for(lambda: "services.applied" in d.log(), what="services.applied in the log")
    assert wait_for(lambda: (tmp_path / "web.seen").exists() and (tmp_path / "web.seen").read_text()) \
        == "up True"
    assert all(newest(sh, name)["state"] == "running" for name in ("db", "web"))

    bad = write(tmp_path / "bad.toml", '[services.a]\nargv = ["true"]\ndepends_on = ["a"]\n')
    refused = daemon("--services", str(bad), state="other").start(wait=False)
    assert refused.proc is not None and refused.proc.wait(30) == 78
    assert "dependency cycle: a -> a" in refused.log()


def test_cli_run_restart_runs_and_ps_show_managed_processes(daemon: Any, tmp_path: Path) -> None:
    d = daemon().start()
    plain = cli(d, "run", "--", "true")
    assert plain.returncode == 0
    sh = Client(socket_path=d.socket_path)
    wait_for(lambda: sh.get(int(plain.stdout))["state"] == "idle")
    assert cli(d, "ps").stdout.splitlines()[0].split() == \
        ["ID", "REF", "STATE", "EXIT", "AGE/DURATION", "COMMAND"]

    started = cli(d, "run", "--name", "svc", "--restart", "always", "--max-restarts", "5",
                  "--health-exec", "true", "--", "sleep", "300")
    assert started.returncode == 0, started.stderr
    process_id = int(started.stdout)
    record = sh.get("svc")
    assert record["id"] == process_id
    assert record["managed"]["restart"]["policy"] == "always"
    assert record["managed"]["restart"]["maxRestarts"] == 5
    assert record["managed"]["healthCheck"]["command"] == ["/bin/sh", "-c", "true"]
    first_pid = wait_for(lambda: sh.get("svc")["pid"])

    restarted = cli(d, "restart", "svc")
    assert restarted.returncode == 0, restarted.stderr
    assert restarted.stdout.startswith(f"{process_id} restarted")
    wait_for(lambda: sh.get("svc")["pid"] not in (None, first_pid), what="a second run")
    assert not alive(first_pid)

    runs = cli(d, "runs", "svc")
    assert runs.returncode == 0, runs.stderr
    lines = runs.stdout.splitlines()
    assert lines[0].split() == ["RUN", "PID", "STARTED", "ENDED", "EXIT", "REASON"]
    assert lines[1].split()[:2] == ["1", str(first_pid)] and lines[1].split()[-1] == "restarted"
    assert lines[2].split()[0] == "2" and lines[2].split()[-1] == "-"
    assert json.loads(cli(d, "runs", "--json", str(process_id)).stdout)["runs"][0]["run"] == 1

    table = cli(d, "ps").stdout.splitlines()
    assert table[0].split() == ["ID", "NAME", "REF", "STATE", "RESTARTS", "HEALTH", "EXIT",
                                "AGE/DURATION", "COMMAND"]
    row = next(line.split() for line in table[1:] if line.split()[0] == str(process_id))
    assert row[1:5] == ["svc", "-", "running", "1"]
    assert row[5] in ("starting", "healthy")

    assert cli(d, "kill", "svc").returncode == 0
    wait_for(lambda: sh.get("svc")["state"] == "idle", what="svc to end for good")
    unknown = cli(d, "restart", "nosuch")
    assert unknown.returncode == 1 and "HTTP 404" in unknown.stderr


def test_a_daemon_stopping_while_its_services_wait_stops_at_once(daemon: Any, tmp_path: Path) -> None:
    port = free_port()                                        # nothing listens there: never healthy
    path = write(tmp_path / "waits.toml", '[services.dep]\nargv = ["sleep", "300"]\n'
                 f'health_check = {{ type = "tcp", port = {port}, initial_delay_ms = 0, '
                 'interval_ms = 100, failure_threshold = 1000 }\n'
                 '[services.user]\nargv = ["sleep", "300"]\ndepends_on = { dep = "healthy" }\n')
    d = daemon("--services", str(path)).start()
    sh = Client(socket_path=d.socket_path)
    wait_for(lambda: sh.list(name="dep")["processes"], what="dep to be started")
    started = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - started < 20                    # not the 60 s wait
    assert "services.interrupted" in d.log() and "services.failed" not in d.log()
