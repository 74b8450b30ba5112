"""aiohttp's own refusals (a malformed or oversized request line or header) in the JSON envelope.

aiohttp parses the request line and headers before any middleware runs. What
it refuses there (a request line past ``max_line_size``, a header past
``max_field_size``, too many headers, a bad method, URL or chunk, a missing
Host) it answers itself from ``RequestHandler.handle_error``: text/plain, and
logged with a traceback at error level. A client's malformed request is not the
daemon's error, and every answer should be ``{"error": ...}``.

``JsonErrorHandler`` answers those 4xx as ``{"error": "malformed request: ...",
"code": "bad_request"}`` (a code always: the path, which decides whether the
edge adds one, is unknown when the request line is what was refused) and logs one
``http.malformed_request`` event at debug, without a traceback. 5xx stay
aiohttp's. ``JsonErrorServer`` is aiohttp's Server making those handlers: a
runner serves it via ``web.ServerRunner`` or by returning it from
``AppRunner._make_server`` (service.py wires it; see docs/security.md).
The edge itself refuses long query strings (414) well below the request-line
limit that make_app raises, so this only meets truly broken requests.
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import hdrs, web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler

from .app import SERVER_SOFTWARE
from .jsonio import json_response

log = structlog.get_logger("stablehand.http")


class JsonErrorHandler(RequestHandler):
    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None, message: str | None = None) -> web.StreamResponse:
        if status >= 500:
            server_error = super().handle_error(request, status, exc, message)
            server_error.headers[hdrs.SERVER] = SERVER_SOFTWARE  # no app hook runs here
            return server_error
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already started; cannot send the error")
        if isinstance(exc, LineTooLong):
            reason = "the request line or a header is too long"
        else:
            reason = (message or getattr(exc, "message", None) or str(exc or "")).strip()
            reason = reason.splitlines()[0][:200] if reason else "unreadable request"
        log.debug("http.malformed_request", status=status, reason=reason, peer=request.remote)
        # The path is unknown when the request line itself was refused: always give a code.
        body = {"error": f"malformed request: {reason}", "code": "bad_request"}
        response = json_response(body, status=status, headers={hdrs.SERVER: SERVER_SOFTWARE})
        response.force_close()
        return response


class JsonErrorServer(web.Server):
    """aiohttp's Server, with JsonErrorHandler (or a subclass: ``handler_class``) per connection."""

    handler_class: type[JsonErrorHandler] = JsonErrorHandler

    def __call__(self) -> RequestHandler:
        kwargs: dict[str, Any] = self._kwargs
        return self.handler_class(self, loop=self._loop, **kwargs)
