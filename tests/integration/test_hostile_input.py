"""Issue 15's "34 inputs answered 500", each class on every route: now a 4xx, and nothing ran.

Lone surrogates and NUL in every string of every body, 5000-digit ids, pids,
cursors and numbers, deep nesting, Last-Event-ID of every bad kind, a 100 kB
query string, invalid UTF-8 in queries and headers, Tensorlake fields of the
wrong type, and the concurrent burst in which one bad start broke the others.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.compat.conftest import record_of, start, wait_idle
from tests.helpers import alive, async_wait_for
from tests.integration.rawhttp import send

BIG = "9" * 5000
JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def target(client: Any) -> AsyncIterator[dict[str, Any]]:
    """A running child every hostile request aims at; it must still be running afterwards."""
    record = await start(client, ["sleep", "60"], stdin="pipe")
    yield record
    assert alive(record["pid"]), "a refused request touched the process"
    assert (await record_of(client, record["id"]))["state"] == "running"
    assert await client.registry.count() == 1, "a refused request wrote a record"
    await client.post(f"/processes/{record['id']}/signals/kill")
    await wait_idle(client, record["id"])


def _bodies(record: dict[str, Any]) -> list[tuple[str, dict[str, Any], bool]]:
    """(path, a valid body, compat route answering in its own words) for every JSON route."""
    process_id, pid = record["id"], record["pid"]
    tensorlake_start = {"command": "true", "args": ["x"], "env": {"K": "v"}, "working_dir": "/tmp",
                        "stdout_mode": "capture", "stderr_mode": "capture"}
    return [
        ("/processes", {"argv": ["true", "x"], "env": {"K": "v"}, "cwd": "/tmp", "ref": "r",
                        "stdin": "null"}, False),
        ("/processes", {"command": "true"}, False),
        (f"/processes/{process_id}/signals/kill", {"note": "x"}, False),
        (f"/processes/{process_id}/signal", {"signal": "SIGUSR1"}, False),
        (f"/processes/{process_id}/stop", {"signal": "SIGTERM", "note": "x"}, False),
        ("/api/v1/processes", {**tensorlake_start, "stdin_mode": "closed"}, False),
        ("/api/v1/processes/run", tensorlake_start, False),
        (f"/api/v1/processes/{pid}/signal", {"signal": 10, "note": "x"}, False),
        (f"/api/processes/terminate/{pid}", {"force": False, "note": "x"}, True),
        (f"/api/process/terminate-gracefully/{pid}", {"timeout": 1, "note": "x"}, True),
        ("/api/connections/kill", {"pid": str(pid)}, True),
    ]


def _string_paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], bool]]:
    """Every string in a JSON value: (path to it, whether it is an object key)."""
    if isinstance(value, str):
        yield path, False
    elif isinstance(value, dict):
        for key, item in value.items():
            yield (*path, key), True
            yield from _string_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _string_paths(item, (*path, index))


def _replaced(value: Any, path: tuple[Any, ...], is_key: bool, bad: str) -> Any:
    if not path:
        return bad
    head, *rest = path
    if isinstance(value, list):
        copy = list(value)
        copy[head] = _replaced(value[head], tuple(rest), is_key, bad)
        return copy
    if is_key and not rest:
        return {(bad if key == head else key): item for key, item in value.items()}
    return {key: (_replaced(item, tuple(rest), is_key, bad) if key == head else item)
            for key, item in value.items()}


async def _assert_refused(client: Any, path: str, raw: bytes, compat: bool) -> None:
    response = await client.post(path, data=raw, headers=JSON)
    assert response.status == 400, (path, raw[:200])
    body = await response.json()
    assert isinstance(body["error"], str)
    if path.startswith("/api/v1/"):
        assert body["code"] in ("invalid_request", "bad_request")
    if not compat:
        assert body["error"]


@pytest.mark.parametrize("bad", [chr(0xD800), "x" + chr(0xDC00) + "y", chr(0xDFFF), "a\x00b"],
                         ids=["high-surrogate", "low-surrogate-inside", "low-surrogate", "nul"])
async def test_surrogates_and_nul_in_every_string_of_every_body(client: Any, target: dict[str, Any],
                                                                bad: str) -> None:
    checked = 0
    for path, body, compat in _bodies(target):
        for where, is_key in _string_paths(body):
            raw = json.dumps(_replaced(body, where, is_key, bad)).encode()  # "\ud800" escaped
            await _assert_refused(client, path, raw, compat)
            checked += 1
    assert checked >= 40


async def test_surrogates_as_raw_bytes_and_invalid_utf8(client: Any, target: dict[str, Any]) -> None:
    for path, _, compat in _bodies(target):
        for raw in (b'{"command": "\xed\xa0\x80", "argv": ["\xed\xa0\x80"], "signal": "\xed\xa0\x80"}',
                    b'{"command": "\xff", "argv": ["\xff"], "pid": "\xff"}',
                    b'\xef\xbb\xbf{"argv": ["true"]}'):
            await _assert_refused(client, path, raw, compat)


@pytest.mark.parametrize("depth", [33, 1000, 100_000])
async def test_deep_nesting_is_400_on_every_json_route(client: Any, target: dict[str, Any],
                                                       depth: int) -> None:
    nested = b"[" * (depth - 1) + b"]" * (depth - 1)
    for path, _, compat in _bodies(target):
        await _assert_refused(client, path, b'{"a": ' + nested + b"}", compat)
        await _assert_refused(client, path, b"[" * depth + b"]" * depth, compat)
    response = await client.post("/processes", data=b'{"a": ' + nested + b"}", headers=JSON)
    assert "nested" in (await response.json())["error"] or "depth" in (await response.json())["error"]


async def test_nesting_up_to_the_limit_reaches_field_checks(client: Any) -> None:
    nested = b"[" * 31 + b"]" * 31  # 32 levels with the object around it
    response = await client.post("/processes", data=b'{"a": ' + nested + b"}", headers=JSON)
    assert response.status == 400 and "unknown field" in (await response.json())["error"]


def _id_routes(record: dict[str, Any], bad: str) -> list[tuple[str, str]]:
    return [("GET", f"/processes/{bad}"), ("DELETE", f"/processes/{bad}"),
            ("GET", f"/processes/{bad}/wait"), ("GET", f"/processes/{bad}/output"),
            ("POST", f"/processes/{bad}/signals/kill"), ("POST", f"/processes/{bad}/stop"),
            ("POST", f"/processes/{bad}/signal"), ("POST", f"/processes/{bad}/stdin"),
            ("POST", f"/processes/{bad}/stdin/close"),
            ("GET", f"/api/v1/processes/{bad}"), ("DELETE", f"/api/v1/processes/{bad}"),
            ("POST", f"/api/v1/processes/{bad}/signal"), ("POST", f"/api/v1/processes/{bad}/stdin"),
            ("POST", f"/api/v1/processes/{bad}/stdin/close"),
            ("GET", f"/api/v1/processes/{bad}/stdout"), ("GET", f"/api/v1/processes/{bad}/output/follow"),
            ("POST", f"/api/processes/terminate/{bad}"),
            ("POST", f"/api/process/terminate-gracefully/{bad}"),
            ("GET", f"/processes?cursor={bad}"), ("GET", f"/processes?limit={bad}"),
            ("GET", f"/processes/{record['id']}/output?offset={bad}"),
            ("GET", f"/processes/{record['id']}/output?limit={bad}"),
            ("GET", f"/processes/{record['id']}/wait?timeout={bad}"),
            ("GET", f"/events?id={bad}")]


@pytest.mark.parametrize("bad", [BIG, "1" + "0" * 19, "-1", "%ED%A0%80", "%00", "1%00"])
async def test_huge_and_malformed_ids_pids_and_cursors_are_400(client: Any, target: dict[str, Any],
                                                               bad: str) -> None:
    for method, path in _id_routes(target, bad):
        kwargs: dict[str, Any] = {"json": {"signal": 10}} if path.endswith("/signal") else {}
        response = await client.request(method, path, **kwargs)
        # Seed 003's fragment types this pid as any int32: -1 names no process, its 404.
        # On the native routes a segment that is not all digits is a name (-1 names nobody:
        # 404), except on Cyrnel's kill route (seed 004: 400).
        named = bad == "-1" and path.startswith("/processes/-1") and not path.endswith("/kill")
        expected = 404 if named or (bad == "-1" and path.startswith("/api/v1/processes/-1")) else 400
        assert response.status == expected, (method, path[:80])
        assert "error" in await response.json()


async def test_huge_numbers_in_bodies_are_400(client: Any, target: dict[str, Any]) -> None:
    pid, process_id = target["pid"], target["id"]
    for path, raw in (("/api/connections/kill", f'{{"pid": "{BIG}"}}'),
                      ("/api/connections/kill", f'{{"pid": {BIG}}}'),
                      (f"/processes/{process_id}/signal", f'{{"signal": "{BIG}"}}'),
                      (f"/processes/{process_id}/signal", f'{{"signal": {BIG}}}'),
                      (f"/processes/{process_id}/stop", f'{{"grace": {BIG}}}'),
                      (f"/api/v1/processes/{pid}/signal", f'{{"signal": {BIG}}}'),
                      ("/processes", f'{{"argv": ["true"], "timeout": {BIG}}}'),
                      ("/processes", '{"argv": ["true"], "timeout": 1e5000}'),
                      ("/api/v1/processes/run", f'{{"command": "true", "timeout": {BIG}}}')):
        response = await client.post(path, data=raw.encode(), headers=JSON)
        assert response.status == 400, (path, raw[:60])


@pytest.mark.parametrize("value", [BIG.encode(), b"-1", b"1.5", b"", b"0x10", b"\xed\xa0\x80",
                                   b"\xff", b"1" + b"0" * 19])
async def test_bad_last_event_id_is_400(client: Any, value: bytes) -> None:
    reply = await send(client, "GET", "/events", headers={"Last-Event-ID": value})
    assert reply.status == 400, value
    assert "Last-Event-ID" in reply.json()["error"]


async def test_a_good_last_event_id_still_resumes(client: Any) -> None:
    response = await client.get("/events", headers={"Last-Event-ID": "0"})
    assert response.status == 200
    assert await response.content.readline() == b": stablehand events\n"
    response.close()


@pytest.mark.parametrize("value", [b"\xff\xfe", b"\xed\xa0\x80", b"a b", b"x" * 256])
async def test_bad_idempotency_keys_are_400(client: Any, value: bytes) -> None:
    reply = await send(client, "POST", "/processes", body=b'{"argv": ["true"]}',
                       headers={"Content-Type": "application/json", "Idempotency-Key": value})
    assert reply.status == 400 and "Idempotency-Key" in reply.json()["error"]
    assert await client.registry.count() == 0


@pytest.mark.parametrize("path", ["/processes", "/api/v1/processes", "/events", "/healthz"])
async def test_a_100_kb_query_string_gets_the_json_envelope(client: Any, path: str) -> None:
    response = await client.get(path + "?ref=" + "a" * 100_000)
    assert response.status == 414
    assert response.headers["Content-Type"].startswith("application/json")
    body = await response.json()
    assert "query string" in body["error"]
    if path.startswith("/api/v1/"):
        assert body["code"] == "uri_too_long"


@pytest.mark.parametrize("query", ["ref=%FF", "ref=%ED%A0%80", "ref=a%00b", "state=%C0%80",
                                   "%FF=1", "ref=%00"])
async def test_queries_that_are_not_utf8_or_hold_nul_are_400(client: Any, query: str) -> None:
    for path in ("/processes", "/events", "/api/v1/processes"):
        response = await client.get(f"{path}?{query}")
        assert response.status == 400, (path, query)
        assert "query string" in (await response.json())["error"]


@pytest.mark.parametrize("field,value", [
    ("args", 0), ("args", ""), ("args", {}), ("args", [1]), ("args", ["a\x00"]),
    ("stdin_mode", {}), ("stdin_mode", 0), ("stdin_mode", []), ("stdin_mode", "tty"),
    ("stdout_mode", {}), ("stdout_mode", False), ("stderr_mode", [1]),
    ("env", {"A": 1}), ("env", ["A=1"]), ("env", "A=1"), ("env", {"A": None}),
    ("working_dir", 1), ("working_dir", {}), ("working_dir", "relative"),
    ("command", 5), ("command", ["sh"]), ("command", ""), ("command", None),
])
async def test_tensorlake_fields_of_the_wrong_type_are_invalid_request(client: Any, field: str,
                                                                       value: Any) -> None:
    for path in ("/api/v1/processes", "/api/v1/processes/run"):
        if path.endswith("/run") and field == "stdin_mode":
            continue
        body = {"command": "true", field: value}
        response = await client.post(path, data=json.dumps(body).encode(), headers=JSON)
        assert response.status == 400, (path, field, value)
        payload = await response.json()
        assert payload["code"] == "invalid_request" and field in payload["error"]
    assert await client.registry.count() == 0


async def test_one_surrogate_in_a_burst_of_300_starts_harms_no_other(client: Any) -> None:
    """Issue 15: a lone surrogate in a concurrent burst made 298 of 300 good starts answer 500."""
    async def one(index: int) -> int:
        ref = "\ud800" if index == 150 else f"burst-{index}"
        raw = json.dumps({"argv": ["true"], "ref": ref}).encode()
        response = await client.post("/processes", data=raw, headers=JSON)
        return int(response.status)

    statuses = await asyncio.gather(*(one(i) for i in range(300)))
    assert statuses.count(201) == 299 and statuses[150] == 400
    assert await client.registry.count() == 299

    async def all_idle() -> bool:
        listing = await (await client.get("/processes", params={"limit": "1000"})).json()
        return all(r["state"] == "idle" for r in listing["processes"])
    await async_wait_for(all_idle, timeout=60, what="the burst to finish")
    listing = await (await client.get("/processes", params={"limit": "1000"})).json()
    assert all(r["exitCode"] == 0 and r["pid"] is not None for r in listing["processes"])
