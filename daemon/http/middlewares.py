"""The edge middleware (access control, rate limits, errors as JSON, metrics) and the access log.

Every failure leaves as ``{"error": "..."}`` with its status: our ApiErrors,
aiohttp's own 404/405/413, and (logged, never leaked) unexpected exceptions as
a 500. Tensorlake's routes (under /api/v1/) always carry a ``code`` as well.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import socket
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from ..errors import ApiError, Forbidden, Unauthorized
from ..oskit import peer_credentials
from .jsonio import json_response
from .keys import CONFIG, RATE_LIMITER, SUPERVISOR
from .ratelimit import Decision

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
    return json_response(body, status=status, headers=headers)


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


def _socket_of(request: web.BaseRequest) -> socket.socket | None:
    transport = request.transport
    return transport.get_extra_info("socket") if transport is not None else None


def _peer_uid(sock: socket.socket | None) -> int | None:
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    try:
        _, uid, _ = peer_credentials(sock)
    except OSError:
        return None
    return uid


def check_access(request: web.Request, sock: socket.socket | None) -> None:
    """Bearer token on every route but GET /healthz; Unix-socket clients per config.

    A Unix-socket client needs no token unless ``socket_requires_token``: the
    socket's file mode already decides who may connect. ``socket_allowed_uids``
    narrows that further by the peer's uid (SO_PEERCRED).
    """
    config = request.app[CONFIG]
    if request.method == "GET" and request.path == "/healthz":
        return
    unix = sock is not None and sock.family == socket.AF_UNIX
    if unix and config.socket_allowed_uids:
        uid = _peer_uid(sock)
        if uid not in config.socket_allowed_uids:
            raise Forbidden(f"uid {uid} may not use this socket")
    if config.token is not None and (not unix or config.socket_requires_token):
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                presented.strip().encode(), config.token.encode()):
            raise Unauthorized("missing or invalid bearer token",
                               headers={"WWW-Authenticate": 'Bearer realm="stablehand"'})


_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _client_key(request: web.Request, sock: socket.socket | None) -> str:
    token = request.headers.get("Authorization")
    if token:
        return "token:" + hashlib.sha256(token.encode()).hexdigest()[:32]
    uid = _peer_uid(sock)
    if uid is not None:
        return f"uid:{uid}"
    return f"ip:{request.remote}"


def _rate_limited(decision: Decision) -> web.Response:
    return json_response(
        {"error": "rate_limit_exceeded",
         "message": f"Too many requests: retry in {decision.retry_after} s.",
         "retryAfter": decision.retry_after},
        status=429, headers=decision.headers())


@web.middleware
async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one middleware: access control, rate limit, errors as JSON, request metrics.

    One layer instead of four keeps the per-request cost low. Rate limiting
    follows Cyrnel's contract: X-RateLimit-* on every limited response (errors
    included), 429 with Retry-After when the client's bucket is empty.
    """
    sock = _socket_of(request)
    decision = None
    try:
        check_access(request, sock)
        limiter = request.app.get(RATE_LIMITER)
        if limiter is not None and request.method in _MUTATING:
            decision = limiter.take(_client_key(request, sock))
    except ApiError as exc:
        response: web.StreamResponse = error_response(request, exc.status, exc.message, exc.code,
                                                      exc.headers or None)
    else:
        if decision is not None and not decision.allowed:
            response = _rate_limited(decision)
        else:
            response = await _rendered(request, handler)
            if decision is not None and not response.prepared:
                response.headers.update(decision.headers())
    route = request.match_info.route.resource
    template = route.canonical if route is not None else "unmatched"
    request.app[SUPERVISOR].metrics.count_request(request.method, template, response.status)
    return response


class AccessLogger(AbstractAccessLogger):
    """One structured ``http.request`` event per request at debug level (never the
    Authorization header); at info and above aiohttp is told not to call it at all."""

    @property
    def enabled(self) -> bool:
        return bool(log.is_enabled_for(logging.DEBUG))

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        log.debug("http.request", method=request.method, path=request.path,
                  status=response.status, ms=round(time * 1000, 2))
