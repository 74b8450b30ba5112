"""The edge middleware (browser checks, access control, rate limits, errors as JSON,
metrics) and the access log.

Every failure leaves as ``{"error": "..."}`` with its status: our ApiErrors,
aiohttp's own 404/405/413, and (logged, never leaked) unexpected exceptions as
a 500. Tensorlake's routes (under /api/v1/) always carry a ``code`` as well.

Rate limiting keys on who the caller is once authenticated: ``token`` when the
bearer token matched, else the Unix peer's uid, else the TCP peer address, so
no Authorization text a client makes up can buy it a fresh bucket. A request
refused with 401 takes a token from its peer's bucket (any method): a flood
of bad tokens is answered 429 once that bucket is empty, while callers with
the right token keep their own bucket.

A failure after a response has started (its headers prepared, a body maybe
half sent: say the output file turned out to be a directory) cannot become a
JSON error: a second response would be written into the first one's body (a
500 inside a 200). Then the edge logs ``http.failed_mid_response`` at warning
with the error and closes the connection, so the client sees a truncated
response; the request is counted as a 500 in the metrics.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from ..config import Config
from ..errors import ApiError, Forbidden, Unauthorized
from . import browsers, parse
from .jsonio import json_response
from .keys import CONFIG, RATE_LIMITER, SUPERVISOR
from .ratelimit import Decision

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = structlog.get_logger("stablehand.http")

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 408: "timeout", 409: "conflict", 413: "payload_too_large",
          414: "uri_too_long", 415: "unsupported_media_type", 429: "rate_limited", 500: "internal_error",
          503: "unavailable"}


def error_response(request: web.Request, status: int, message: str, code: str | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    body: dict[str, str] = {"error": message}
    if code is None and request.path.startswith("/api/v1/"):
        code = _CODES.get(status, "error")
    if code is not None:
        body["code"] = code
    return json_response(body, status=status, headers=headers)


# Request key set once a response is prepared (aiohttp < 3.12 has no RequestKey: a str then).
STARTED: Any = (web.RequestKey("stablehand_response_started", bool)
                if hasattr(web, "RequestKey") else "stablehand_response_started")
# Request key: who is calling, as check_access says (a poll's default consumer is keyed on it).
CALLER: Any = (web.RequestKey("stablehand_caller", str)
               if hasattr(web, "RequestKey") else "stablehand_caller")


def _cut(request: web.Request, exc: BaseException) -> web.StreamResponse:
    """A failure after the response started: no second response, close the connection."""
    log.warning("http.failed_mid_response", method=request.method, path=request.path,
                error=f"{type(exc).__name__}: {exc}")
    request.protocol.force_close()
    # aiohttp tries to send this one on the closed connection, fails and ends quietly.
    return web.Response(status=500)


async def _rendered(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Call the handler; any failure comes back as a JSON error response (unless the
    response had already started: then the connection is cut)."""
    try:
        return await handler(request)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if request.get(STARTED):
            return _cut(request, exc)
        return _error(request, exc)


def _error(request: web.Request, failure: Exception) -> web.StreamResponse:
    """The JSON error response for a handler's failure (nothing sent yet)."""
    try:
        raise failure
    except ApiError as exc:
        return error_response(request, exc.status, exc.message, exc.code, exc.headers or None)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = {404: f"no route for {request.path}",
                   405: f"method {request.method} is not allowed on {request.path}",
                   413: "request body is too large"}.get(exc.status, exc.reason)
        headers = {"Allow": _allowed(request, exc.headers["Allow"])} if "Allow" in exc.headers \
            else None
        return error_response(request, exc.status, message, headers=headers)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("http.unhandled", method=request.method, path=request.path)
        return error_response(request, 500, "internal error")


def _allowed(request: web.Request, allow: str) -> str:
    """A 405's ``Allow``. aiohttp's unites the methods of every resource the path matches,
    but a concrete path (``/processes/stop``: POST) comes before a templated one it also
    matches (``/processes/{id}``: GET, DELETE), as in OpenAPI's matching: the concrete
    path's own methods are what is allowed on it."""
    for resource in request.app.router.resources():
        if isinstance(resource, web.PlainResource) and resource.canonical == request.path:
            return ",".join(sorted({route.method for route in resource}))
    return allow


def _socket_of(request: web.BaseRequest) -> socket.socket | None:
    transport = request.transport
    return transport.get_extra_info("socket") if transport is not None else None


_UCRED = struct.Struct("3i")   # struct ucred: pid, uid, gid


def _peer_uid(sock: socket.socket | None) -> int | None:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED).

    A socket option of the connection, read here rather than in oskit (which is for
    processes the daemon runs): the HTTP layer imports nothing of oskit.
    """
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except OSError:
        return None
    _, uid, _ = _UCRED.unpack(raw)
    return int(uid)


def _token_required(config: Config, unix: bool) -> bool:
    return config.token is not None and (not unix or config.socket_requires_token)


def _peer_key(sock: socket.socket | None, request: web.Request) -> str:
    """Who is calling, when no token says so: the Unix peer's uid, else the TCP peer address."""
    if sock is not None and sock.family == socket.AF_UNIX:
        uid = _peer_uid(sock)
        return f"uid:{uid}" if uid is not None else "unix"
    return f"ip:{request.remote}"


def check_access(request: web.Request, sock: socket.socket | None) -> str:
    """Bearer token on every route but GET /healthz; Unix-socket clients per config.

    Returns the caller's identity for rate limiting: ``token`` once the token
    has matched (there is one token, so one identity), else the peer's uid or
    address. A Unix-socket client needs no token unless ``socket_requires_token``:
    the socket's file mode already decides who may connect.
    ``socket_allowed_uids`` narrows that further by the peer's uid (SO_PEERCRED).
    """
    config = request.app[CONFIG]
    if request.method == "GET" and request.path == "/healthz":
        return _peer_key(sock, request)
    unix = sock is not None and sock.family == socket.AF_UNIX
    if unix and config.socket_allowed_uids:
        uid = _peer_uid(sock)
        if uid not in config.socket_allowed_uids:
            raise Forbidden(f"uid {uid} may not use this socket")
    if not _token_required(config, unix):
        return _peer_key(sock, request)
    assert config.token is not None
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    # surrogateescape: aiohttp decodes header bytes that are not UTF-8 that way.
    if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode("utf-8", "surrogateescape"), config.token.encode()):
        raise Unauthorized("missing or invalid bearer token",
                           headers={"WWW-Authenticate": 'Bearer realm="stablehand"'})
    return "token"


def _rate_limited(decision: Decision) -> web.Response:
    return json_response(
        {"error": "rate_limit_exceeded",
         "message": f"Too many requests: retry in {decision.retry_after} s.",
         "retryAfter": decision.retry_after},
        status=429, headers=decision.headers())


def _guard(request: web.Request, sock: socket.socket | None) -> tuple[web.StreamResponse | None,
                                                                        Decision | None]:
    """Everything before the handler, in order; (an answer that ends the request, rate decision).

    Order: a foreign Origin (403) before anything else; then the Host check for
    requests no token vouches for (403); a CORS preflight from an allowed Origin
    (204); the token (401); the rate limit (429). Then, with the rate headers
    on the answer, the query string (414/400) and the body's Content-Type (415).
    """
    config = request.app[CONFIG]
    unix = sock is not None and sock.family == socket.AF_UNIX
    limiter = request.app.get(RATE_LIMITER)
    browsers.check_origin(request, config)
    if not _token_required(config, unix):
        browsers.check_host(request, config)
    answer = browsers.preflight(request, config)
    if answer is not None:
        return answer, None
    decision = None
    try:
        identity = check_access(request, sock)
        request[CALLER] = identity
    except Unauthorized as exc:
        # A flood of bad tokens is limited per peer, whatever Authorization it sends.
        if limiter is not None:
            decision = limiter.take(_peer_key(sock, request))
            if not decision.allowed:
                return _rate_limited(decision), None
            exc.headers.update(decision.headers())
        raise
    if limiter is not None and request.method in browsers.MUTATING:
        decision = limiter.take(identity)
        if not decision.allowed:
            return _rate_limited(decision), None
    return None, decision


def _validated(handler: Handler) -> Handler:
    """The handler behind the checks that need no handler knowledge: query string, body type."""
    async def validated(request: web.Request) -> web.StreamResponse:
        parse.check_query(request)
        browsers.check_body_type(request)
        return await handler(request)
    return validated


@web.middleware
async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one middleware: browser checks, access control, rate limit, errors as JSON, metrics.

    One layer instead of several keeps the per-request cost low. Rate limiting
    follows Cyrnel's contract: X-RateLimit-* on every limited response (errors
    included), 429 with Retry-After when the client's bucket is empty.
    """
    sock = _socket_of(request)
    decision = None
    try:
        answer, decision = _guard(request, sock)
    except ApiError as exc:
        response: web.StreamResponse = error_response(request, exc.status, exc.message, exc.code,
                                                      exc.headers or None)
    else:
        if answer is not None:
            response = answer
        else:
            response = await _rendered(request, _validated(handler))
            if decision is not None and not response.prepared:
                response.headers.update(decision.headers())
    route = request.match_info.route.resource
    template = route.canonical if route is not None else "unmatched"
    request.app[SUPERVISOR].served(request.method, template, response.status)
    return response


async def cors_on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: CORS headers for an allowed Origin (streams included);
    also marks the request as started, so a later failure is not answered twice."""
    request[STARTED] = True
    browsers.cors_headers(request, response, request.app[CONFIG])


class AccessLogger(AbstractAccessLogger):
    """One structured ``http.request`` event per request at debug level (never the
    Authorization header); at info and above aiohttp is told not to call it at all."""

    @property
    def enabled(self) -> bool:
        return bool(log.is_enabled_for(logging.DEBUG))

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        log.debug("http.request", method=request.method, path=request.path,
                  status=response.status, ms=round(time * 1000, 2))
