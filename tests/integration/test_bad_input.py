"""Every malformed request gets a 4xx with a JSON error that says what was wrong."""

from __future__ import annotations

from typing import Any

import pytest

BAD_STARTS = [
    ({}, "exactly one of 'argv' or 'command'"),
    ({"argv": []}, "'argv' must be a non-empty array"),
    ({"argv": "sleep 1"}, "'argv' must be a non-empty array"),
    ({"argv": ["sleep", 1]}, "'argv' must be a string"),
    ({"argv": [""]}, "'argv' must not be empty"),
    ({"argv": ["a\x00b"]}, "NUL"),
    ({"argv": ["true"], "command": "true"}, "exactly one of"),
    ({"command": ""}, "'command' must not be empty"),
    ({"command": 5}, "'command' must be a string"),
    ({"argv": ["true"], "bogus": 1}, "unknown field 'bogus'"),
    ({"argv": ["true"], "env": ["A=1"]}, "'env' must be an object"),
    ({"argv": ["true"], "env": {"A": 1}}, "'env.A' must be a string"),
    ({"argv": ["true"], "env": {"A=B": "1"}}, "must not contain '='"),
    ({"argv": ["true"], "env": {"A": "x\x00"}}, "NUL"),
    ({"argv": ["true"], "cwd": "relative/dir"}, "'cwd' must be an absolute path"),
    ({"argv": ["true"], "cwd": 7}, "'cwd' must be a string"),
    ({"argv": ["true"], "ref": ""}, "'ref' must not be empty"),
    ({"argv": ["true"], "ref": 3}, "'ref' must be a string"),
    ({"argv": ["true"], "timeout": 0}, "'timeout' must be greater than 0"),
    ({"argv": ["true"], "timeout": -1}, "'timeout'"),
    ({"argv": ["true"], "timeout": "5"}, "'timeout' must be a number"),
    ({"argv": ["true"], "timeout": True}, "'timeout' must be a number"),
    ({"argv": ["true"], "timeout": 1e300}, "'timeout'"),
    ({"argv": ["true"], "grace": -1}, "'grace'"),
    ({"argv": ["true"], "stdin": "tty"}, "'stdin'"),
]


@pytest.mark.parametrize("body,message", BAD_STARTS)
async def test_bad_start_bodies(client: Any, body: dict[str, Any], message: str) -> None:
    response = await client.post("/processes", json=body)
    assert response.status == 400
    assert message in (await response.json())["error"]


@pytest.mark.parametrize("raw,status,message", [
    (b"[1, 2]", 400, "must be a JSON object"),
    (b"\"argv\"", 400, "must be a JSON object"),
    (b"{not json", 400, "not valid JSON"),
    (b"", 400, "body is required"),
    (b"\xff\xfe", 400, "not valid JSON"),
])
async def test_bad_start_payloads(client: Any, raw: bytes, status: int, message: str) -> None:
    response = await client.post("/processes", data=raw, headers={"Content-Type": "application/json"})
    assert response.status == status
    assert message in (await response.json())["error"]


async def test_wrong_content_type_is_415(client: Any) -> None:
    response = await client.post("/processes", data=b"argv=true",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status == 415
    assert "application/json" in (await response.json())["error"]


async def test_body_too_large_is_413(make_daemon: Any) -> None:
    client = await make_daemon(max_body_bytes=1024)
    response = await client.post("/processes", json={"argv": ["true"], "ref": "x" * 4096})
    assert response.status == 413
    assert "too large" in (await response.json())["error"]


@pytest.mark.parametrize("path", ["/processes/0", "/processes/99999999999999999999999"])
async def test_bad_ids_are_400(client: Any, path: str) -> None:
    for method, suffix in (("GET", ""), ("POST", "/signals/kill"), ("GET", "/wait")):
        response = await client.request(method, path + suffix)
        assert response.status == 400, (method, path + suffix)
        assert "must be a positive integer" in (await response.json())["error"] \
            or "between 1 and" in (await response.json())["error"]


@pytest.mark.parametrize("name", ["abc", "-1", "1.5"])
async def test_a_segment_that_names_no_process_is_404_or_on_the_kill_route_400(
        client: Any, name: str) -> None:
    # Managed processes are addressed by name wherever an id is: a name no process carries
    # is a 404, except on Cyrnel's kill route, where seed 004 documents a 400 for an id
    # that is not a number.
    for method, suffix in (("GET", ""), ("GET", "/wait")):
        response = await client.request(method, f"/processes/{name}{suffix}")
        assert response.status == 404, (method, name + suffix)
        assert f"no process is named '{name}'" == (await response.json())["error"]
    response = await client.post(f"/processes/{name}/signals/kill")
    assert response.status == 400
    assert f"{name!r} is neither a process id nor the name of a process" == \
        (await response.json())["error"]


async def test_unknown_id_is_404(client: Any) -> None:
    for method, suffix in (("GET", ""), ("POST", "/signals/kill"), ("GET", "/wait")):
        response = await client.request(method, "/processes/424242" + suffix)
        assert response.status == 404
        assert (await response.json()) == {"error": "process 424242 not found"}


async def test_kill_body_must_be_an_object(client: Any) -> None:
    record = await (await client.post("/processes", json={"argv": ["sleep", "30"]})).json()
    for raw in (b"[]", b"42", b"\"x\"", b"{oops"):
        response = await client.post(f"/processes/{record['id']}/signals/kill", data=raw,
                                      headers={"Content-Type": "application/json"})
        assert response.status == 400
        assert "error" in await response.json()
    assert (await client.post(f"/processes/{record['id']}/signals/kill")).status == 200
    await client.get(f"/processes/{record['id']}/wait")


@pytest.mark.parametrize("query,message", [
    ({"state": "sleeping"}, "'state' must be one of"),
    ({"exitState": "meh"}, "'exitState' must be one of"),
    ({"limit": "0"}, "limit"),
    ({"limit": "1001"}, "at most 1000"),
    ({"limit": "ten"}, "limit"),
    ({"cursor": "x"}, "cursor"),
])
async def test_bad_list_queries(client: Any, query: dict[str, str], message: str) -> None:
    response = await client.get("/processes", params=query)
    assert response.status == 400
    assert message in (await response.json())["error"]


@pytest.mark.parametrize("timeout", ["-1", "soon", "99999", "nan", "inf"])
async def test_bad_wait_timeout(client: Any, timeout: str) -> None:
    record = await (await client.post("/processes", json={"argv": ["true"]})).json()
    response = await client.get(f"/processes/{record['id']}/wait", params={"timeout": timeout})
    assert response.status == 400
    assert "timeout" in (await response.json())["error"]
    await client.get(f"/processes/{record['id']}/wait")


async def test_unknown_route_and_method_use_the_envelope(client: Any) -> None:
    response = await client.get("/nope")
    assert response.status == 404 and "error" in await response.json()
    response = await client.delete("/processes")
    assert response.status == 405 and "not allowed" in (await response.json())["error"]
