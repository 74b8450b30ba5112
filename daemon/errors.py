"""One error hierarchy: every error the daemon raises on purpose is a :class:`StablehandError`.

Two branches hang from the root:

* **ApiError** and its subclasses: what a client did or asked cannot be done. Each
  carries its HTTP status (a class attribute) and a message for the client; the
  HTTP edge middleware renders them as ``{"error": message}``, plus ``code`` where
  one was given (Tensorlake's routes always give one; Cyrnel's envelope has
  ``error`` alone). Nothing below the HTTP layer imports aiohttp: the supervisor
  and the registry raise these without knowing about HTTP.
* The daemon's own failures, each defined beside the code that raises it: the
  registry's (``registry.RegistryError``; its ``StorageError`` and ``WriteRejected``
  are ApiErrors too, a 503 and a 400), a bad setting (``config.ConfigError``), the
  keeper (``keeper.client.KeeperError``), a state dir, lock or token file
  that cannot be used (``statedir.StateDirError``, ``statedir.LockHeld``,
  ``tokens.TokenFileError``), start-up (``service.StartupError``). The CLI turns
  these into a message and an exit code; one that reaches the HTTP edge without
  being an ApiError is a bug, logged and answered as a plain 500.

This module imports nothing, so any module may raise from it.
"""

from __future__ import annotations


class StablehandError(Exception):
    """The root of every error Stablehand raises on purpose."""


class ApiError(StablehandError):
    """A request cannot be served: ``status`` and ``message`` say why, to the client."""

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


class UriTooLong(ApiError):
    status = 414


class UnsupportedMediaType(ApiError):
    status = 415


class Unavailable(ApiError):
    status = 503
