"""Request parsing shared by every route: bodies, path ids, query values, headers.

Each helper raises BadRequest (or another 4xx ApiError) with a message that
names what was wrong, so bad input never reaches the supervisor as a 500.

Decisions (see docs/security.md, "Bad input"):

* Bodies are parsed by orjson: it refuses invalid UTF-8, lone surrogates
  (``"\\ud800"``, which ``json.loads`` accepts and SQLite later cannot store),
  NaN/Infinity and a byte-order mark, and has no RecursionError. Every parsed
  body is then walked once: nesting deeper than MAX_DEPTH or a NUL in any
  string (object keys included) is a 400 naming where it is. Integers past 64
  bits come out as floats (and then fail their field's range check).
* Integers in paths, queries and headers (ids, pids, cursors, offsets,
  ``Last-Event-ID``) are ASCII digits without leading zeros and are length-checked
  before ``int()``: a 5000-digit id is a 400, never Python's ValueError for
  integers past 4300 digits.
* The query string is checked once per request, before any handler: at most
  MAX_QUERY_BYTES (414 past that), every name and value valid UTF-8 once
  percent-decoded, and no NUL. aiohttp would otherwise turn invalid UTF-8 into
  U+FFFD silently.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import unquote_to_bytes

import orjson
from aiohttp import web

from ..errors import BadRequest, UnsupportedMediaType, UriTooLong

MAX_ID = 2**63 - 1
MAX_PID = 2**31 - 1
MAX_DEPTH = 32              # nesting levels in a JSON body (the top-level value is level 1)
MAX_QUERY_BYTES = 8192      # the raw query string; the longest useful one (a 1 KiB ref) fits
_MAX_ID_DIGITS = len(str(MAX_ID))
_MAX_PID_DIGITS = len(str(MAX_PID))
_JSON_TYPES = ("application/json",)

Handler = TypeVar("Handler", bound=Callable[[web.Request], Awaitable[web.StreamResponse]])
RAW_BODY_HANDLERS: set[Callable[..., Any]] = set()


def raw_body(handler: Handler) -> Handler:
    """Mark a route whose body is raw bytes (stdin) rather than JSON.

    The edge middleware reads this to decide which Content-Types a route takes
    (browsers.check_body_type); the handler itself reads ``request.read()``.
    """
    RAW_BODY_HANDLERS.add(handler)
    return handler


def is_json_type(content_type: str) -> bool:
    content_type = content_type.lower()
    return content_type in _JSON_TYPES or content_type.endswith("+json")


def shown(text: str, limit: int = 40) -> str:
    """A client's value quoted for an error message, cut short if long."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


class _BadString(Exception):
    """A NUL in a body string; ``where`` collects the path on the way out."""

    def __init__(self) -> None:
        super().__init__()
        self.where: list[str | int] = []


def _walk(value: Any, depth: int) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            raise _BadString()
        return
    if isinstance(value, (dict, list)) and depth > MAX_DEPTH:
        raise BadRequest(f"request body is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            try:
                if "\x00" in key:
                    raise _BadString()
                _walk(item, depth + 1)
            except _BadString as exc:
                exc.where.append(key)
                raise
    elif isinstance(value, list):
        for index, item in enumerate(value):
            try:
                _walk(item, depth + 1)
            except _BadString as exc:
                exc.where.append(index)
                raise


def _path(where: list[str | int]) -> str:
    text = ""
    for part in reversed(where):
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "body"


def loads(raw: bytes) -> Any:
    """Parse and check a JSON document (see the module docstring); BadRequest says why."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    try:
        _walk(value, 1)
    except _BadString as exc:
        raise BadRequest(f"'{_path(exc.where)}' must not contain NUL characters") from None
    return value


async def json_body(request: web.Request, *, required: bool = False) -> Any:
    """The parsed JSON body, or None when there is none (unless ``required``).

    The edge middleware has already refused a body of the wrong Content-Type;
    the check here keeps a handler safe if it is ever mounted without it.
    """
    raw = await request.read()
    if not raw.strip():
        if required:
            raise BadRequest("a JSON request body is required")
        return None
    if not is_json_type(request.content_type) or "Content-Type" not in request.headers:
        raise UnsupportedMediaType("a request body must be sent with Content-Type: application/json")
    return loads(raw)


async def json_object(request: web.Request, *, required: bool = False) -> dict[str, Any]:
    """The body as a JSON object; no body counts as ``{}`` unless ``required``."""
    body = await json_body(request, required=required)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def whole_number(text: str, what: str, minimum: int = 1) -> int:
    """A path, query or header value that must be an integer from ``minimum`` up to MAX_ID."""
    kind = "a positive integer" if minimum == 1 else f"an integer of at least {minimum}"
    if not text.isascii() or not text.isdigit():
        raise BadRequest(f"invalid {what} {shown(text)}: must be {kind}")
    if len(text) > _MAX_ID_DIGITS:  # int() of thousands of digits raises ValueError
        raise BadRequest(f"invalid {what} {shown(text)}: must be between {minimum} and {MAX_ID}")
    value = int(text)
    if str(value) != text:
        raise BadRequest(f"invalid {what} {shown(text)}: must be {kind} without leading zeros")
    if not minimum <= value <= MAX_ID:
        raise BadRequest(f"invalid {what} {shown(text)}: must be between {minimum} and {MAX_ID}")
    return value


def positive_int(text: str, what: str) -> int:
    return whole_number(text, what, 1)


def os_pid(text: str) -> int | None:
    """An OS pid written in a path (1 to 2**31-1, no leading zeros), or None.

    The compatibility routes each answer a bad pid in their own document's words,
    so this reports failure instead of raising.
    """
    if (text.isascii() and text.isdigit() and not text.startswith("0")
            and len(text) <= _MAX_PID_DIGITS and int(text) <= MAX_PID):
        return int(text)
    return None


def integral(value: Any) -> Any:
    """JSON's ``10.0`` is the integer 10: an integral float as an int, any other value as is."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def signal(value: Any, lookup: Callable[[Any], int], field: str = "signal", *,
           names: bool = True) -> int:
    """A signal in a body: a name (``"SIGUSR1"``, ``"USR1"``) or a number; a number only
    with ``names=False``. BadRequest names the field and says what was wrong.

    ``lookup`` is the supervisor's ``signal_number`` (ValueError for no such signal):
    which signals exist is the OS's business, not the HTTP layer's.
    """
    if value is None:
        raise BadRequest(f"'{field}' is required: a name like \"SIGUSR1\" or a number")
    value = integral(value)
    if isinstance(value, bool) or not isinstance(value, (str, int) if names else int):
        raise BadRequest(f"'{field}' must be a signal {'name or number' if names else 'number'}")
    if isinstance(value, str) and len(value) > 32:
        raise BadRequest(f"'{field}': {shown(value)} is not a known signal name")
    try:
        return lookup(value)
    except ValueError as exc:
        raise BadRequest(f"'{field}': {exc}") from None


def path_id(request: web.Request, name: str = "id", what: str = "process id") -> int:
    return positive_int(request.match_info[name], what)


def last_event_id(request: web.Request) -> int | None:
    """``Last-Event-ID`` (an SSE resume point): None, or an event number 0..MAX_ID."""
    text = request.headers.get("Last-Event-ID")
    if text is None:
        return None
    return whole_number(text, "Last-Event-ID (a number from an earlier event)", 0)


def check_query(request: web.Request) -> None:
    """Refuse a query string that is too long, not UTF-8, or holds a NUL (see module doc)."""
    raw = request.raw_path.partition("?")[2]
    if not raw:
        return
    if len(raw) > MAX_QUERY_BYTES:
        raise UriTooLong(f"the query string is {len(raw)} bytes; at most {MAX_QUERY_BYTES} are accepted")
    for pair in raw.split("&"):
        for part in pair.split("=", 1):
            data = unquote_to_bytes(part.replace("+", " "))
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest("the query string is not valid UTF-8 once percent-decoded") from None
            if "\x00" in text:
                raise BadRequest("the query string must not contain NUL characters")


def number(value: Any, field: str, *, minimum: float = 0.0, maximum: float,
           allow_zero: bool = True) -> float:
    """A JSON number (not a bool) within [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(f"'{field}' must be a number")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        finite = False
    if not finite:
        raise BadRequest(f"'{field}' must be a finite number at most {maximum:g}")
    if value < minimum or value > maximum or (not allow_zero and value == 0):
        low = "greater than 0" if not allow_zero else f"at least {minimum:g}"
        raise BadRequest(f"'{field}' must be {low} and at most {maximum:g}")
    return float(value)


def query_number(request: web.Request, name: str, default: float | None, *, maximum: float,
                 allow_zero: bool = True) -> float | None:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = float(text) if len(text) <= 64 else math.inf
    except ValueError:
        raise BadRequest(f"query parameter '{name}' must be a number") from None
    return number(value, name, maximum=maximum, allow_zero=allow_zero)


def string(value: Any, field: str, *, allow_empty: bool = False, max_length: int = 1 << 16) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"'{field}' must be a string")
    if not value and not allow_empty:
        raise BadRequest(f"'{field}' must not be empty")
    if "\x00" in value:
        raise BadRequest(f"'{field}' must not contain NUL characters")
    if len(value) > max_length:
        raise BadRequest(f"'{field}' is longer than {max_length} characters")
    return value


def env_map(value: Any, field: str = "env") -> dict[str, str]:
    """An environment to add: an object of strings (None means none), names without '='."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"'{field}' must be an object of strings")
    for key, item in value.items():
        string(key, field)
        if "=" in key:
            raise BadRequest(f"'{field}' name {shown(key)} must not contain '='")
        string(item, f"{field}.{key}", allow_empty=True)
    return dict(value)


def absolute_path(value: Any, field: str) -> str | None:
    """An optional absolute path (a working directory)."""
    if value is None:
        return None
    path = string(value, field, max_length=4096)
    if not path.startswith("/"):
        raise BadRequest(f"'{field}' must be an absolute path")
    return path
