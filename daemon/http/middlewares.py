"""Middlewares: the one place errors become JSON, and the access log.

Every failure leaves as ``{"error": "..."}`` with its status: our ApiErrors,
aiohttp's own 404/405/413, and (logged, never leaked) unexpected exceptions as
a 500. Tensorlake's routes (under /api/v1/) always carry a ``code`` as well.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from ..errors import ApiError

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


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(request, exc.status, exc.message, exc.code)
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


class AccessLogger(AbstractAccessLogger):
    """One structured ``http.request`` event per request (never the Authorization header)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        log.info("http.request", method=request.method, path=request.path,
                 status=response.status, ms=round(time * 1000, 2))
