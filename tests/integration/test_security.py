"""The edge: bearer auth, rate limits, allowed_programs, the OpenAPI contract."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from daemon.http.ratelimit import RateLimiter
from daemon.http.routes import openapi_document
from tests.helpers import async_wait_for

TOKEN = "s3cret-token"

def _protected_routes() -> list[tuple[str, str]]:
    """Every (method, path) the OpenAPI document lists, but GET /healthz, with sample ids."""
    routes = []
    for path, item in openapi_document()["paths"].items():
        for method in item:
            if method in ("get", "post", "put", "patch", "delete") and path != "/healthz":
                routes.append((method.upper(), path.replace("{id}", "1").replace("{pid}", "1")))
    return routes


PROTECTED = _protected_routes()


@pytest.fixture
async def secured(make_daemon: Any) -> Any:
    return await make_daemon(token=TOKEN)


def test_every_documented_route_but_healthz_is_checked() -> None:
    assert len(PROTECTED) >= 30 and ("GET", "/healthz") not in PROTECTED


@pytest.mark.parametrize("method,path", PROTECTED)
async def test_401_without_or_with_a_wrong_token(secured: Any, method: str, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                    {"Authorization": "Basic " + TOKEN}):
        response = await secured.request(method, path, json={}, headers=headers)
        assert response.status == 401, (path, headers)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        payload = await response.json()
        assert "token" in payload["error"]


async def test_right_token_is_accepted_and_healthz_is_open(secured: Any) -> None:
    assert (await secured.get("/healthz")).status == 200
    headers = {"Authorization": f"Bearer {TOKEN}"}
    response = await secured.post("/processes", json={"argv": ["true"]}, headers=headers)
    assert response.status == 201
    record = await response.json()
    response = await secured.get(f"/processes/{record['id']}/wait", headers=headers)
    assert response.status == 200
    assert (await secured.get("/openapi.json", headers=headers)).status == 200


async def test_allowed_programs_confine_what_may_run(make_daemon: Any) -> None:
    client = await make_daemon(allowed_programs=("true",))
    response = await client.post("/processes", json={"argv": ["sleep", "1"]})
    assert response.status == 403
    assert await response.json() == {"error": "program 'sleep' is not in allowed_programs"}
    response = await client.post("/processes", json={"command": "true"})
    assert response.status == 403 and "/bin/sh" in (await response.json())["error"]
    response = await client.post("/processes", json={"argv": ["true", "anything"]})
    assert response.status == 201
    await client.get(f"/processes/{(await response.json())['id']}/wait")


async def test_rate_limit_429_with_headers_and_refill(make_daemon: Any) -> None:
    client = await make_daemon(rate_limit=1.0, rate_burst=3)  # refills 1 token per second
    statuses = []
    for _ in range(4):
        response = await client.post("/api/connections/kill", json={"pid": 999_999})
        statuses.append(response.status)
        for header in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"):
            assert header in response.headers
        assert response.headers["X-RateLimit-Limit"] == "3"
        assert int(response.headers["X-RateLimit-Reset"]) >= int(time.time())
    assert statuses == [404, 404, 404, 429]
    assert response.headers["X-RateLimit-Remaining"] == "0"
    body = await response.json()
    assert body["error"] == "rate_limit_exceeded" and isinstance(body["message"], str)
    assert body["retryAfter"] >= 1 and response.headers["Retry-After"] == str(body["retryAfter"])
    assert (await client.get("/processes")).status == 200, "reads are not limited"
    await _wait_until_allowed(client)


async def _wait_until_allowed(client: Any) -> None:
    async def allowed() -> bool:
        response = await client.post("/api/connections/kill", json={"pid": 999_999})
        if response.status == 429:
            return False
        assert response.status == 404
        return True

    await async_wait_for(allowed, timeout=5, what="the bucket to refill")


def test_token_bucket_refills_at_its_rate() -> None:
    now = [100.0]
    limiter = RateLimiter(rate=2.0, burst=2, clock=lambda: now[0])
    assert [limiter.take("a").allowed for _ in range(3)] == [True, True, False]
    assert limiter.take("b").allowed, "buckets are per client"
    refused = limiter.take("a")
    assert refused.retry_after == 1 and refused.remaining == 0
    now[0] += 0.5
    assert limiter.take("a").allowed
    assert not limiter.take("a").allowed


def _spec_routes() -> set[tuple[str, str]]:
    found = set()
    for path, item in openapi_document()["paths"].items():
        for method in item:
            if method in ("get", "post", "put", "patch", "delete"):
                found.add((method.upper(), path))
    return found


async def test_spec_and_routes_match_exactly(client: Any) -> None:
    served = set()
    for route in client.app.router.routes():
        if route.method in ("HEAD", "*"):
            continue
        info = route.resource.get_info()
        path = info.get("formatter") or info.get("path")
        served.add((route.method, path))
    assert served == _spec_routes()


async def test_openapi_json_is_served(client: Any) -> None:
    response = await client.get("/openapi.json")
    assert response.status == 200
    document = await response.json()
    assert document["openapi"].startswith("3.1")
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    for item in document["paths"].values():
        for operation in item.values():
            if isinstance(operation, dict) and "responses" in operation:
                assert all(re.fullmatch(r"[1-5]\d\d", code) for code in operation["responses"])


async def test_random_authorization_values_cannot_bypass_the_rate_limit(make_daemon: Any) -> None:
    """The limiter once keyed on the raw Authorization text: a fresh header was a fresh bucket."""
    client = await make_daemon(rate_limit=0.01, rate_burst=3)  # no token: every header is noise
    statuses = []
    for attempt in range(5):
        response = await client.post("/api/connections/kill", json={"pid": 999_999},
                                     headers={"Authorization": f"Bearer random-{attempt}"})
        statuses.append(response.status)
    assert statuses == [404, 404, 404, 429, 429]


async def test_a_flood_of_bad_tokens_is_limited_per_peer_and_spares_the_token(make_daemon: Any) -> None:
    client = await make_daemon(token=TOKEN, rate_limit=0.01, rate_burst=3)
    statuses = []
    for attempt in range(5):
        response = await client.get("/processes", headers={"Authorization": f"Bearer guess-{attempt}"})
        statuses.append(response.status)
    assert statuses == [401, 401, 401, 429, 429]
    assert response.headers["Retry-After"] and (await response.json())["error"] == "rate_limit_exceeded"
    good = {"Authorization": f"Bearer {TOKEN}"}
    response = await client.post("/api/connections/kill", json={"pid": 999_999}, headers=good)
    assert response.status == 404, "the token's own bucket is untouched"
    assert response.headers["X-RateLimit-Remaining"] == "2"


def test_bucket_map_is_bounded_and_keeps_the_recent_clients() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=0.001, burst=1, clock=lambda: now[0], max_clients=100)
    assert limiter.take("busy").allowed and not limiter.take("busy").allowed
    for index in range(99):
        limiter.take(f"flood-{index}")
    assert not limiter.take("busy").allowed, "a recently used bucket is kept"
    for index in range(10_000):
        limiter.take(f"more-{index}")
        assert len(limiter) <= 100
    assert limiter.take("busy").allowed, "the least recently used bucket was dropped"
