"""Web pages cannot use the daemon: foreign Origins, DNS rebinding, Content-Type tricks.

Each attack from issue 15 is sent as a browser sends it (tests/integration/rawhttp.py
writes the exact bytes), then the test checks that nothing ran: the registry is
empty or the target process is still running.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from daemon.http.app import make_app
from tests.compat.conftest import record_of, start, wait_idle
from tests.helpers import alive
from tests.integration.rawhttp import send

TOKEN = "browser-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SAFELISTED = ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
              "multipart/form-data; boundary=----x"]
EVIL = "https://evil.example"


@pytest.fixture
async def unix_socket(make_daemon: Any) -> AsyncIterator[Any]:
    """``serve(client)``: the same daemon's app also served on a Unix socket; yields its path."""
    runners: list[web.AppRunner] = []
    directory = tempfile.TemporaryDirectory(prefix="sh-")

    async def serve(client: Any) -> str:
        runner = web.AppRunner(make_app(client.config, client.supervisor))
        await runner.setup()
        runners.append(runner)
        path = str(Path(directory.name) / "s.sock")
        await web.UnixSite(runner, path).start()
        return path

    yield serve
    for runner in runners:
        await runner.cleanup()
    directory.cleanup()


# --- Origin -------------------------------------------------------------------------------

@pytest.mark.parametrize("token", [None, TOKEN])
async def test_a_foreign_origin_is_403_on_every_route_token_or_not(make_daemon: Any,
                                                                  token: str | None) -> None:
    client = await make_daemon(token=token)
    for method, path in (("GET", "/healthz"), ("POST", "/processes"), ("GET", "/processes"),
                         ("POST", "/api/v1/processes"), ("POST", "/api/connections/kill"),
                         ("GET", "/no/such/route")):
        for origin in (EVIL, "null", "http://127.0.0.1:9371"):
            response = await client.request(method, path, json={"argv": ["true"], "command": "true"},
                                            headers={"Origin": origin, **AUTH})
            assert response.status == 403, (method, path, origin)
            assert "Origin" in (await response.json())["error"]
    assert await client.registry.count() == 0


async def test_a_foreign_origin_is_403_on_the_unix_socket(make_daemon: Any, unix_socket: Any) -> None:
    client = await make_daemon()
    path = await unix_socket(client)
    reply = await send(client, "POST", "/processes", unix=path, host="localhost",
                       headers={"Origin": EVIL, "Content-Type": "application/json"},
                       body=b'{"argv": ["true"]}')
    assert reply.status == 403 and "Origin" in reply.json()["error"]
    assert (await send(client, "GET", "/healthz", unix=path, host="localhost")).status == 200
    assert await client.registry.count() == 0


async def test_an_allowed_origin_gets_cors(make_daemon: Any) -> None:
    client = await make_daemon(allowed_origins=("https://ui.example",))
    response = await client.get("/processes", headers={"Origin": "https://ui.example"})
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://ui.example"
    assert "Origin" in response.headers["Vary"]
    preflight = await client.options("/processes", headers={
        "Origin": "https://ui.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert preflight.status == 204
    assert "Content-Type" in preflight.headers["Access-Control-Allow-Headers"]
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://ui.example"
    response = await client.get("/processes", headers={"Origin": EVIL})
    assert response.status == 403 and "Access-Control-Allow-Origin" not in response.headers


# --- Host (DNS rebinding) -----------------------------------------------------------------

async def test_dns_rebinding_host_is_403_without_a_token(client: Any, tmp_path: Path) -> None:
    """A rebound page is same-origin (no Origin header) but sends its own name as Host."""
    marker = tmp_path / "pwned"
    for host in ("evil.example:9371", "evil.example"):
        response = await client.post("/processes", json={"argv": ["touch", str(marker)]},
                                     headers={"Host": host})
        assert response.status == 403 and "Host" in (await response.json())["error"]
        assert (await client.get("/processes", headers={"Host": host})).status == 403
        assert (await client.get("/healthz", headers={"Host": host})).status == 403
    assert await client.registry.count() == 0 and not marker.exists()


@pytest.mark.parametrize("host", ["localhost", "localhost:9371", "LOCALHOST.", "app.localhost:1",
                                  "127.0.0.1", "127.1.2.3:80", "[::1]:9371", "[::1]",
                                  "[::ffff:127.0.0.1]:9371"])
async def test_loopback_hosts_are_served_without_a_token(client: Any, host: str) -> None:
    assert (await client.get("/processes", headers={"Host": host})).status == 200


@pytest.mark.parametrize("host", ["evil.example", "localhost.evil.example", "127.0.0.1.nip.io",
                                  "[::2]", "::1", "localhost:x", "0.0.0.0:9371", "", "[::1"])
async def test_other_hosts_are_refused_without_a_token(client: Any, host: str) -> None:
    reply = await send(client, "GET", "/processes", host=b"", headers={"Host": host})
    assert reply.status == 403, host
    assert "Host" in reply.json()["error"]


async def test_an_http_1_0_request_without_host_is_served(client: Any) -> None:
    """No browser omits Host (aiohttp itself requires it from HTTP/1.1 clients)."""
    assert (await send(client, "GET", "/processes", host=b"", version="HTTP/1.0")).status == 200


async def test_allowed_hosts_with_and_without_port(make_daemon: Any) -> None:
    client = await make_daemon(allowed_hosts=("devbox", "proxy.example:8080"))
    for host, status in (("devbox", 200), ("DEVBOX:9371", 200), ("proxy.example:8080", 200),
                         ("proxy.example:9090", 403), ("proxy.example", 403), ("evil.example", 403)):
        assert (await client.get("/processes", headers={"Host": host})).status == status, host


async def test_with_a_token_any_host_is_fine(make_daemon: Any) -> None:
    client = await make_daemon(token=TOKEN)
    headers = {"Host": "sandbox-1.local", **AUTH}
    assert (await client.get("/processes", headers=headers)).status == 200
    assert (await client.get("/processes", headers={"Host": "sandbox-1.local"})).status == 401


async def test_the_unix_socket_checks_host_when_it_needs_no_token(make_daemon: Any,
                                                                  unix_socket: Any) -> None:
    client = await make_daemon(token=TOKEN)  # TCP needs it; the socket does not
    path = await unix_socket(client)
    assert (await send(client, "GET", "/processes", unix=path, host="localhost")).status == 200
    reply = await send(client, "GET", "/processes", unix=path, host="evil.example")
    assert reply.status == 403 and "Host" in reply.json()["error"]


# --- Content-Type -------------------------------------------------------------------------

@pytest.mark.parametrize("content_type", [None, *SAFELISTED])
async def test_a_cross_site_fetch_body_cannot_start_anything(client: Any, tmp_path: Path,
                                                             content_type: str | None) -> None:
    """``fetch(url, {method: "POST", body})`` sends text/plain or, from a Blob, no type at all."""
    marker = tmp_path / "pwned"
    body = f'{{"argv": ["touch", "{marker}"]}}'.encode()
    headers = {"Content-Type": content_type} if content_type else {}
    for path in ("/processes", "/api/v1/processes", "/api/v1/processes/run"):
        payload = body if path == "/processes" else f'{{"command": "touch", "args": ["{marker}"]}}'.encode()
        reply = await send(client, "POST", path, headers=headers, body=payload)
        assert reply.status == 415, (path, content_type)
        error = reply.json()
        assert "application/json" in error["error"]
        if path.startswith("/api/v1/"):
            assert error["code"] == "unsupported_media_type"
    assert await client.registry.count() == 0 and not marker.exists()


@pytest.mark.parametrize("content_type", SAFELISTED)
async def test_a_form_post_with_an_empty_body_cannot_kill(client: Any, content_type: str) -> None:
    record = await start(client, ["sleep", "60"], stdin="pipe")
    headers = {"Content-Type": content_type}
    for method, path in (("POST", f"/processes/{record['id']}/signals/kill"),
                         ("POST", f"/processes/{record['id']}/stop"),
                         ("POST", f"/processes/{record['id']}/stdin/close"),
                         ("DELETE", f"/processes/{record['id']}"),
                         ("DELETE", f"/api/v1/processes/{record['pid']}"),
                         ("POST", f"/api/v1/processes/{record['pid']}/stdin/close"),
                         ("POST", f"/api/processes/terminate/{record['pid']}"),
                         ("POST", f"/api/process/terminate-gracefully/{record['pid']}")):
        reply = await send(client, method, path, headers=headers, body=b"")
        assert reply.status == 415, (method, path)
    assert alive(record["pid"])
    current = await record_of(client, record["id"])
    assert current["state"] == "running"
    # curl -X POST sends no body and no type: still works.
    reply = await send(client, "POST", f"/processes/{record['id']}/signals/kill")
    assert reply.status == 200
    await wait_idle(client, record["id"])


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON", "application/vnd.example+json"])
async def test_json_types_are_read(client: Any, content_type: str) -> None:
    reply = await send(client, "POST", "/processes", headers={"Content-Type": content_type},
                       body=b'{"argv": ["true"]}')
    assert reply.status == 201
    await wait_idle(client, reply.json()["id"])


@pytest.mark.parametrize("content_type", ["application/octet-stream", "application/xml"])
async def test_other_types_on_a_json_route_are_415(client: Any, content_type: str) -> None:
    reply = await send(client, "POST", "/processes", headers={"Content-Type": content_type},
                       body=b'{"argv": ["true"]}')
    assert reply.status == 415
    assert await client.registry.count() == 0


async def test_raw_stdin_takes_octet_stream_or_no_type(client: Any) -> None:
    record = await start(client, ["cat"], stdin="pipe")
    native = f"/processes/{record['id']}/stdin"
    tensorlake = f"/api/v1/processes/{record['pid']}/stdin"
    for headers in ({}, {"Content-Type": "application/octet-stream"}):
        assert (await send(client, "POST", native, headers=headers, body=b"a\n")).status == 200
        assert (await send(client, "POST", tensorlake, headers=headers, body=b"b\n")).status == 204
    for content_type in (*SAFELISTED, "application/json"):
        for path in (native, tensorlake):
            reply = await send(client, "POST", path, headers={"Content-Type": content_type},
                               body=b"evil\n")
            assert reply.status == 415, (path, content_type)
            assert "application/octet-stream" in reply.json()["error"]
    assert (await client.post(f"/processes/{record['id']}/stdin/close")).status == 204
    await wait_idle(client, record["id"])
    output = await client.get(f"/processes/{record['id']}/output")
    assert await output.read() == b"a\nb\na\nb\n"


async def test_an_empty_body_without_a_type_is_accepted_where_the_body_is_optional(client: Any) -> None:
    record = await start(client, ["sleep", "60"])
    assert (await send(client, "POST", f"/processes/{record['id']}/stop", body=b"")).status == 200
    await wait_idle(client, record["id"])
    reply = await send(client, "POST", "/processes", body=b"")
    assert reply.status == 400 and "required" in reply.json()["error"]
