"""Request parsing shared by every route: bodies, path ids, query values.

Each helper raises BadRequest (or UnsupportedMediaType) with a message that
names what was wrong, so bad input never reaches the supervisor as a 500.
"""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

from ..errors import BadRequest, UnsupportedMediaType

MAX_ID = 2**63 - 1
MAX_PID = 2**31 - 1
_JSON_TYPES = ("application/json",)


def is_json_type(content_type: str) -> bool:
    return content_type in _JSON_TYPES or content_type.endswith("+json")


async def json_body(request: web.Request, *, required: bool = False) -> Any:
    """The parsed JSON body, or None when there is none (unless ``required``)."""
    raw = await request.read()
    if not raw.strip():
        if required:
            raise BadRequest("a JSON request body is required")
        return None
    if "Content-Type" in request.headers and not is_json_type(request.content_type):
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, not {request.content_type!r}")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("request body is not valid JSON") from None


async def json_object(request: web.Request, *, required: bool = False) -> dict[str, Any]:
    """The body as a JSON object; no body counts as ``{}`` unless ``required``."""
    body = await json_body(request, required=required)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def whole_number(text: str, what: str, minimum: int = 1) -> int:
    """A path or query value that must be an integer from ``minimum`` up, written plainly."""
    kind = "a positive integer" if minimum == 1 else f"an integer of at least {minimum}"
    if not text.isascii() or not text.isdigit():
        raise BadRequest(f"invalid {what} {text!r}: must be {kind}")
    value = int(text)
    if str(value) != text:
        raise BadRequest(f"invalid {what} {text!r}: must be {kind} without leading zeros")
    if not minimum <= value <= MAX_ID:
        raise BadRequest(f"invalid {what} {text!r}: must be between {minimum} and {MAX_ID}")
    return value


def positive_int(text: str, what: str) -> int:
    return whole_number(text, what, 1)


def os_pid(text: str) -> int | None:
    """An OS pid written in a path (1 to 2**31-1, no leading zeros), or None.

    The compatibility routes each answer a bad pid in their own document's words,
    so this reports failure instead of raising.
    """
    if text.isascii() and text.isdigit() and not text.startswith("0") and int(text) <= MAX_PID:
        return int(text)
    return None


def path_id(request: web.Request, name: str = "id", what: str = "process id") -> int:
    return positive_int(request.match_info[name], what)


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


def query_number(request: web.Request, name: str, default: float | None, *, maximum: float) -> float | None:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise BadRequest(f"query parameter '{name}' must be a number") from None
    return number(value, name, maximum=maximum)


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
            raise BadRequest(f"'{field}' name {key!r} must not contain '='")
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
