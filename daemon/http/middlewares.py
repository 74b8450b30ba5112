"""Middlewares: errors as JSON, bearer-token auth, rate limiting, the access log.

Every failure leaves as ``{"error": "..."}`` with its status: our ApiErrors,
aiohttp's own 404/405/413, and (logged, never leaked) unexpected exceptions as
a 500. Tensorlake's routes (under /api/v1/) always carry a ``code`` as well.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from ..errors import ApiError, Forbidden, Unauthorized
from ..oskit import peer_credentials
from .keys import CONFIG, RATE_LIMITER, SUPERVISOR

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = structlog.get_logger("stablehand.http")

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 408: "timeout", 409: "conflict", 413: "payload_too_large",
          415: "unsupported_media_type", 429: "rate_limited", 500: "internal_error",
          503: "unavailable"}


def error_response(request: web.Request, status: int, message: str, code: str | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    body: dict[str, str] = {"error": message}
    if code is None and request.path.startswith("/api/v1/"):
        code = _CODES.get(status, "error")
    if code is not None:
        body["code"] = code
    return web.json_response(body, status=status, headers=headers)


async def _rendered(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Call the handler; any failure comes back as a JSON error response."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(request, exc.status, exc.message, exc.code, exc.headers or None)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = {404: f"no route for {request.path}",
                   405: f"method {request.method} is not allowed on {request.path}",
                   413: "request body is too large"}.get(exc.status, exc.reason)
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(request, exc.status, message, headers=headers)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("http.unhandled", method=request.method, path=request.path)
        return error_response(request, 500, "internal error")


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await _rendered(request, handler)
    route = request.match_info.route.resource
    template = route.canonical if route is not None else "unmatched"
    request.app[SUPERVISOR].metrics.http_requests.labels(request.method, template, response.status).inc()
    return response


def _socket_of(request: web.BaseRequest) -> socket.socket | None:
    transport = request.transport
    return transport.get_extra_info("socket") if transport is not None else None


def _is_unix(request: web.BaseRequest) -> bool:
    sock = _socket_of(request)
    return sock is not None and sock.family == socket.AF_UNIX


def _peer_uid(request: web.BaseRequest) -> int | None:
    sock = _socket_of(request)
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    try:
        _, uid, _ = peer_credentials(sock)
    except OSError:
        return None
    return uid


@web.middleware
async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bearer token on every route but GET /healthz; Unix-socket clients per config.

    A Unix-socket client needs no token unless ``socket_requires_token``: the
    socket's file mode already decides who may connect. ``socket_allowed_uids``
    narrows that further by the peer's uid (SO_PEERCRED).
    """
    config = request.app[CONFIG]
    if request.method == "GET" and request.path == "/healthz":
        return await handler(request)
    unix = _is_unix(request)
    if unix and config.socket_allowed_uids:
        uid = _peer_uid(request)
        if uid not in config.socket_allowed_uids:
            raise Forbidden(f"uid {uid} may not use this socket")
    if config.token is not None and (not unix or config.socket_requires_token):
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                presented.strip().encode(), config.token.encode()):
            raise Unauthorized("missing or invalid bearer token",
                               headers={"WWW-Authenticate": 'Bearer realm="stablehand"'})
    return await handler(request)


_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _client_key(request: web.Request) -> str:
    token = request.headers.get("Authorization")
    if token:
        return "token:" + hashlib.sha256(token.encode()).hexdigest()[:32]
    uid = _peer_uid(request)
    if uid is not None:
        return f"uid:{uid}"
    return f"ip:{request.remote}"


@web.middleware
async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Cyrnel's contract: X-RateLimit-* on every limited response, 429 with Retry-After."""
    limiter = request.app.get(RATE_LIMITER)
    if limiter is None or request.method not in _MUTATING:
        return await handler(request)
    decision = limiter.take(_client_key(request))
    if not decision.allowed:
        return web.json_response(
            {"error": "rate_limit_exceeded",
             "message": f"Too many requests: retry in {decision.retry_after} s.",
             "retryAfter": decision.retry_after},
            status=429, headers=decision.headers())
    response = await _rendered(request, handler)
    if not response.prepared:
        response.headers.update(decision.headers())
    return response


class AccessLogger(AbstractAccessLogger):
    """One structured ``http.request`` event per request (never the Authorization header)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        log.info("http.request", method=request.method, path=request.path,
                 status=response.status, ms=round(time * 1000, 2))
