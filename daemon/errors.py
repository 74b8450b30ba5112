"""One error hierarchy: each API error carries its HTTP status and a message for the client.

The supervisor raises these; the HTTP error middleware renders them as
``{"error": message}``, plus ``code`` where one was given (Tensorlake's routes
always give one; Cyrnel's envelope has ``error`` alone). Nothing below the HTTP layer
imports aiohttp.
"""

from __future__ import annotations


class ApiError(Exception):
    status = 500
    code: str | None = None

    def __init__(self, message: str, *, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        if code is not None:
            self.code = code


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class UnsupportedMediaType(ApiError):
    status = 415


class Unavailable(ApiError):
    status = 503
