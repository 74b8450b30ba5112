"""The services file: parsing, validation, dependency order, and the plan against live records."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from daemon import services
from daemon.services import REF_PREFIX, ServicesError, condition, parse, plan

BASE = Path("/srv/app")

EXAMPLE = """
[services.db]
argv = ["postgres", "-D", "/srv/db"]
cwd = "/srv"
env = { PGPORT = "5432" }
restart = { policy = "always", max_restarts = 10, initial_backoff_ms = 500, max_backoff_ms = 30000 }
health_check = { type = "tcp", port = 5432, interval_ms = 1000 }
ready = { port = 5432 }

[services.web]
command = "python -m http.server 8080"
depends_on = { db = "healthy" }
"""


def by_name(text: str) -> dict[str, services.Service]:
    return {service.name: service for service in parse(text, BASE)}


def error_of(text: str) -> str:
    with pytest.raises(ServicesError) as caught:
        parse(text, BASE)
    return str(caught.value)


def record(id_: int, name: str | None, ref: str | None = None, state: str = "running",
           **extra: Any) -> dict[str, Any]:
    return {"id": id_, "name": name, "ref": ref, "state": state, **extra}


# --- parsing -----------------------------------------------------------------------------------

def test_the_example_becomes_native_camel_case_bodies() -> None:
    db, web = parse(EXAMPLE, BASE)
    assert (db.name, web.name) == ("db", "web")
    assert db.body["argv"] == ["postgres", "-D", "/srv/db"]
    assert db.body["cwd"] == "/srv"
    assert db.body["env"] == {"PGPORT": "5432"}
    assert db.body["name"] == "db"
    assert db.body["restart"] == {"policy": "always", "maxRestarts": 10, "initialBackoffMs": 500,
                                  "maxBackoffMs": 30000}
    check = db.body["healthCheck"]
    assert (check["type"], check["port"], check["intervalMs"], check["failureThreshold"]) == \
        ("tcp", 5432, 1000, 3)
    assert db.body["ready"] == {"port": 5432}
    assert web.body["command"] == "python -m http.server 8080"
    assert web.depends_on == (("db", "healthy"),)
    assert web.body["restart"]["policy"] == "never"          # the API's default
    assert "healthCheck" not in web.body and "ready" not in web.body
    assert db.start_body()["ref"] == REF_PREFIX + db.fingerprint


def test_cwd_defaults_to_the_files_directory_and_a_relative_one_is_taken_from_there() -> None:
    found = by_name('[services.a]\nargv = ["true"]\n[services.b]\nargv = ["true"]\ncwd = "data/../logs"\n')
    assert found["a"].body["cwd"] == "/srv/app"
    assert found["b"].body["cwd"] == "/srv/app/logs"


def test_load_reads_a_file_and_resolves_cwd_from_its_directory(tmp_path: Path) -> None:
    path = tmp_path / "services.toml"
    path.write_text('[services.a]\nargv = ["true"]\ncwd = "sub"\n')
    (service,) = services.load(path)
    assert service.body["cwd"] == str(tmp_path / "sub")
    with pytest.raises(ServicesError, match="cannot read .*missing.toml"):
        services.load(tmp_path / "missing.toml")


def test_shorthands_restart_string_hyphenated_policy_list_depends_and_string_health_command() -> None:
    found = by_name("""
[services.a]
argv = ["true"]
restart = "on-failure"
health_check = { type = "exec", command = "test -e /tmp/x" }
[services.b]
argv = ["true"]
restart = { policy = "on-failure", max_restarts = 2 }
depends_on = ["a"]
""")
    assert found["a"].body["restart"]["policy"] == "on_failure"
    assert found["a"].body["healthCheck"]["command"] == ["/bin/sh", "-c", "test -e /tmp/x"]
    assert found["b"].body["restart"]["maxRestarts"] == 2
    assert found["b"].depends_on == (("a", "started"),)


@pytest.mark.parametrize(("ready", "wire"), [
    ("{ port = 80 }", {"port": 80}),
    ('{ log_line = "ready to accept" }', {"logLine": "ready to accept"}),
    ("{ health_check = true }", {"healthCheck": True}),
])
def test_ready_conditions(ready: str, wire: dict[str, Any]) -> None:
    (service,) = parse(f'[services.a]\nargv = ["x"]\nhealth_check = {{ type = "tcp", port = 80 }}\n'
                       f"ready = {ready}\n", BASE)
    assert service.body["ready"] == wire


@pytest.mark.parametrize(("text", "message"), [
    ("not toml [", "not valid TOML"),
    ("", "no services"),
    ('other = 1\n[services.a]\nargv = ["x"]', "other is not known at the top level"),
    ("[services.a]\ncwd = '/'", "services.a needs exactly one of argv or command"),
    ("[services.a]\nargv = ['x']\ncommand = 'x'", "exactly one of argv or command"),
    ("[services.a]\nargv = []", "services.a.argv must be a non-empty list"),
    ("[services.a]\ncommand = ' '", "services.a.command must be a non-empty string"),
    ("[services.a]\nargv = ['x']\nimage = 'y'", "services.a.image is not a known field"),
    ("[services.a]\nargv = ['x']\nenv = { PORT = 80 }", "services.a.env.PORT must be a string"),
    ("[services.a]\nargv = ['x']\nenv = ['A=1']", "services.a.env must be a table"),
    ("[services.a]\nargv = ['x']\ngrace = -1", "services.a.grace must be a number"),
    ("[services.a]\nargv = ['x']\nrestart = { policy = 'sometimes' }",
     "services.a.restart.policy must be never, on_failure or always"),
    ("[services.a]\nargv = ['x']\nrestart = { policy = 'always', max_restarts = -1 }",
     "services.a.restart.max_restarts must be an integer >= 0"),
    ("[services.a]\nargv = ['x']\nhealth_check = { type = 'tcp' }",
     "services.a.health_check.port is required for a tcp check"),
    ("[services.a]\nargv = ['x']\nhealth_check = { type = 'udp', port = 1 }",
     "services.a.health_check.type must be http or tcp or exec"),
    ("[services.a]\nargv = ['x']\nhealth_check = { type = 'http', port = 1, timeout = 5 }",
     "services.a.health_check.timeout is not a known field"),
    ("[services.a]\nargv = ['x']\nready = { port = 1, log_line = 'x' }",
     "services.a.ready must have exactly one of port, log_line, health_check"),
    ("[services.a]\nargv = ['x']\nready = { log_line = '(' }", "services.a.ready.log_line is not a regular"),
    ("[services.a]\nargv = ['x']\nready = { health_check = true }",
     "services.a.ready.health_check needs a health_check"),
    ("[services.a]\nargv = ['x']\nready = { url = 'x' }", "services.a.ready.url is not a known field"),
    ("[services.123]\nargv = ['x']", "services.123: the name must not be all digits"),
    ('[services."a/b"]\nargv = ["x"]', "must not contain '/'"),
    ("[services.a]\nargv = ['x']\ndepends_on = { b = 'started' }",
     "services.a.depends_on: unknown service 'b' (declared: a)"),
    ("[services.a]\nargv = ['x']\ndepends_on = { b = 'ready' }\n[services.b]\nargv = ['x']",
     "services.a.depends_on.b must be one of started, healthy, completed_successfully"),
    ("[services.a]\nargv = ['x']\ndepends_on = { b = 'healthy' }\n[services.b]\nargv = ['x']",
     "services.a.depends_on.b is 'healthy', but b has no health_check"),
    ("[services.a]\nargv = ['x']\ndepends_on = { b = 'completed_successfully' }\n"
     "[services.b]\nargv = ['x']\nrestart = 'always'", "b's restart policy is 'always'"),
])
def test_validation_errors_name_the_field(text: str, message: str) -> None:
    assert message in error_of(text)


# --- dependency order --------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "cycle"), [
    ("[services.a]\nargv=['x']\ndepends_on=['b']\n[services.b]\nargv=['x']\ndepends_on=['a']",
     "dependency cycle: a -> b -> a"),
    ("[services.a]\nargv=['x']\ndepends_on=['a']", "dependency cycle: a -> a"),
    ("[services.x]\nargv=['x']\ndepends_on=['a']\n"
     "[services.a]\nargv=['x']\ndepends_on=['b']\n[services.b]\nargv=['x']\ndepends_on=['c']\n"
     "[services.c]\nargv=['x']\ndepends_on=['a']", "dependency cycle: a -> b -> c -> a"),
])
def test_a_cycle_is_an_error_naming_it(text: str, cycle: str) -> None:
    assert error_of(text) == cycle


def test_order_puts_dependencies_first_and_otherwise_keeps_the_files_order() -> None:
    text = """
[services.web]
argv = ["x"]
depends_on = { api = "started", migrate = "completed_successfully" }
[services.worker]
argv = ["x"]
[services.api]
argv = ["x"]
depends_on = ["db"]
[services.migrate]
argv = ["x"]
depends_on = ["db"]
[services.db]
argv = ["x"]
"""
    assert [s.name for s in parse(text, BASE)] == ["db", "api", "migrate", "web", "worker"]


# --- fingerprints ------------------------------------------------------------------------------

def test_fingerprint_ignores_defaults_written_out_and_depends_on_but_sees_real_changes() -> None:
    plain = by_name('[services.a]\nargv = ["x"]\nrestart = "always"\n[services.b]\nargv = ["x"]')["a"]
    spelled = by_name('[services.a]\nargv = ["x"]\nrestart = { policy = "always", initial_backoff_ms = 500, '
                      'max_backoff_ms = 30000 }\ndepends_on = ["b"]\n[services.b]\nargv = ["x"]')["a"]
    assert plain.fingerprint == spelled.fingerprint
    changed = [by_name(text)["a"].fingerprint for text in (
        '[services.a]\nargv = ["y"]\nrestart = "always"',
        '[services.a]\nargv = ["x"]\nrestart = "on_failure"',
        '[services.a]\nargv = ["x"]\nrestart = "always"\nenv = { A = "1" }',
        '[services.a]\nargv = ["x"]\nrestart = "always"\ncwd = "/tmp"',
        '[services.a]\nargv = ["x"]\nrestart = "always"\ngrace = 3',
    )]
    assert len({plain.fingerprint, *changed}) == 6


# --- the plan ----------------------------------------------------------------------------------

def test_plan_creates_what_is_missing_keeps_what_matches_and_restarts_what_changed() -> None:
    declared = parse("""
[services.db]
argv = ["db"]
[services.web]
argv = ["web"]
depends_on = ["db"]
[services.cache]
argv = ["cache"]
[services.job]
argv = ["job"]
""", BASE)
    db, web, cache, job = declared
    live = [record(1, "db", db.ref),
            record(2, "web", REF_PREFIX + "0" * 64),
            record(3, "cache", "my-own-ref"),
            record(4, "job", job.ref, state="idle", exitState="success")]
    steps = plan(declared, live)
    assert [(s.action, s.name) for s in steps] == [
        ("keep", "db"), ("restart", "web"), ("restart", "cache"), ("create", "job")]
    assert steps[1].record is not None and steps[1].record["id"] == 2
    assert steps[1].why == "its spec changed"
    assert steps[2].why == "not started from a services file"
    assert [s.describe() for s in steps] == [
        "keep     db  (process 1)", "restart  web  (process 2: its spec changed)",
        "restart  cache  (process 3: not started from a services file)", "create   job"]


def test_plan_uses_the_newest_live_record_and_replaces_a_terminating_one() -> None:
    (svc,) = parse('[services.a]\nargv = ["x"]', BASE)
    assert plan([svc], [record(1, "a", svc.ref, state="idle"), record(5, "a", svc.ref)])[0].record \
        == record(5, "a", svc.ref)
    step = plan([svc], [record(7, "a", svc.ref, state="terminating")])[0]
    assert (step.action, step.why) == ("restart", "it is stopping")
    assert plan([svc], [record(3, "a", svc.ref, state="queued")])[0].action == "keep"


def test_prune_stops_only_live_services_records_no_longer_declared_and_first() -> None:
    (svc,) = parse('[services.a]\nargv = ["x"]', BASE)
    live = [record(1, "old", REF_PREFIX + "1" * 64),
            record(2, "gone", REF_PREFIX + "2" * 64, state="idle"),
            record(3, "mine", "not-a-service"),
            record(4, None, None),
            record(5, "a", svc.ref),
            record(1, "old", REF_PREFIX + "1" * 64)]           # seen twice: stopped once
    assert [(s.action, s.name) for s in plan([svc], live, prune=True)] == [
        ("stop", "old"), ("keep", "a")]
    assert [s.action for s in plan([svc], live, prune=False)] == ["keep"]
    assert plan([svc], live, prune=True)[0].describe() == "stop     old  (process 1: no longer in the file)"


# --- dependency conditions ---------------------------------------------------------------------

@pytest.mark.parametrize(("rec", "wanted", "met"), [
    ({"state": "running", "managed": {"status": "running"}}, "started", True),
    ({"state": "running", "managed": {"status": "starting"}}, "started", None),
    ({"state": "running", "managed": {"status": "backing_off"}}, "started", None),
    ({"state": "queued"}, "started", None),
    ({"state": "idle", "exitState": "success"}, "started", True),
    ({"state": "idle", "exitState": "failed", "exitCode": 3}, "started", False),
    ({"state": "terminating"}, "started", False),
    ({"state": "running", "managed": {"status": "running", "healthStatus": "starting"}}, "healthy", None),
    ({"state": "running", "managed": {"status": "running", "healthStatus": "healthy"}}, "healthy", True),
    ({"state": "idle", "exitState": "success"}, "healthy", False),
    ({"state": "running", "managed": {"status": "running"}}, "completed_successfully", None),
    ({"state": "idle", "exitState": "success", "exitCode": 0}, "completed_successfully", True),
    ({"state": "idle", "exitState": "failed", "exitSignal": "SIGKILL"}, "completed_successfully", False),
])
def test_condition(rec: dict[str, Any], wanted: str, met: bool | None) -> None:
    assert condition(rec, wanted)[0] is met


def test_a_condition_that_can_never_hold_says_why() -> None:
    met, why = condition({"state": "idle", "exitState": "failed", "exitCode": 3,
                          "managed": {"lastError": "gave up after 2 restarts"}}, "completed_successfully")
    assert met is False
    assert why == "it ended failed (exit code 3): gave up after 2 restarts"


# --- serve --services: how the daemon reaches itself -------------------------------------------

def test_own_target_prefers_the_unix_socket_then_loopback_tcp(tmp_path: Path) -> None:
    import socket

    from daemon.config import Config, Listen
    from daemon.services_apply import own_target
    from daemon.systemd import SystemdEnv
    none = SystemdEnv(None, None, [])
    base = Config(state_dir=tmp_path, listen=Listen("0.0.0.0", 9371), socket=tmp_path / "s.sock",
                  token="t")
    assert own_target(base, none) == {"socket_path": tmp_path / "s.sock", "token": "t"}
    tcp_only = dataclasses.replace(base, socket=None)
    assert own_target(tcp_only, none) == {"url": "http://127.0.0.1:9371", "token": "t"}
    assert own_target(dataclasses.replace(tcp_only, listen=Listen("::", 1)), none) == \
        {"url": "http://[::1]:1", "token": "t"}
    # Sockets passed by systemd: the Unix one first, whatever the order.
    with socket.socket() as tcp, socket.socket(socket.AF_UNIX) as unix:
        tcp.bind(("127.0.0.1", 0))
        unix.bind(str(tmp_path / "passed.sock"))
        passed = SystemdEnv(None, None, [(tcp.fileno(), "tcp"), (unix.fileno(), "unix")])
        assert own_target(base, passed) == {"socket_path": str(tmp_path / "passed.sock"), "token": "t"}
        only_tcp = SystemdEnv(None, None, [(tcp.fileno(), "tcp")])
        assert own_target(base, only_tcp) == {"url": f"http://127.0.0.1:{tcp.getsockname()[1]}",
                                              "token": "t"}
