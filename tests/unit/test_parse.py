"""The HTTP layer's value parsers (daemon/http/parse.py), table by table.

Each either returns the typed value or raises a 4xx ApiError whose message names
the field and what was wrong: the message is part of what a client sees, so the
tables check it. The helpers that take a request (``json_body``, ``check_query``,
``path_id``, ``last_event_id``, ``query_number``) are exercised through a real
server in tests/integration/test_hostile_input.py; ``number`` here is what
``query_number`` checks its value with.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from daemon.errors import BadRequest
from daemon.http import parse
from daemon.oskit import signal_number

# --- JSON bodies ---------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "value"), [
    (b'{"a": 1}', {"a": 1}),
    (b"[1, 2]", [1, 2]),
    (b'"\\u00e9"', "\u00e9"),
    (b"[" * parse.MAX_DEPTH + b"]" * parse.MAX_DEPTH,                 # MAX_DEPTH levels: allowed
     json.loads("[" * parse.MAX_DEPTH + "]" * parse.MAX_DEPTH)),
    (b'{"a":' * (parse.MAX_DEPTH - 1) + b"[]" + b"}" * (parse.MAX_DEPTH - 1),
     json.loads('{"a":' * (parse.MAX_DEPTH - 1) + "[]" + "}" * (parse.MAX_DEPTH - 1))),
    (b"1" + b"0" * 25, 1e25),   # past 64 bits: a float, refused later by its field's range
])
def test_loads_accepts(raw: bytes, value: Any) -> None:
    assert parse.loads(raw) == value


@pytest.mark.parametrize(("raw", "message"), [
    (b"", "not valid JSON"),
    (b"{", "not valid JSON"),
    (b"NaN", "not valid JSON"),
    (b"[Infinity]", "not valid JSON"),
    (b'"\\ud800"', "not valid JSON"),           # a lone surrogate SQLite could not store
    (b'"\xff"', "not valid JSON"),              # not UTF-8
    (b"\xef\xbb\xbf{}", "not valid JSON"),      # a byte-order mark
    (b"[" * (parse.MAX_DEPTH + 1) + b"]" * (parse.MAX_DEPTH + 1),
     f"nested deeper than {parse.MAX_DEPTH} levels"),
    (b'{"a":' * parse.MAX_DEPTH + b"[]" + b"}" * parse.MAX_DEPTH,
     f"nested deeper than {parse.MAX_DEPTH} levels"),
    (b'"\\u0000"', "'body' must not contain NUL characters"),
    (b'{"argv": ["ls", "a\\u0000b"]}', r"'argv\[1\]' must not contain NUL characters"),
    (b'{"env": {"K": "\\u0000"}}', "'env.K' must not contain NUL characters"),
    (b'{"a": [{"b": [0, "\\u0000"]}]}', r"'a\[0\].b\[1\]' must not contain NUL characters"),
    (b'{"k\\u0000": 1}', "must not contain NUL characters"),   # in a key, too
])
def test_loads_refuses_with_where_and_why(raw: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message) as caught:
        parse.loads(raw)
    assert caught.value.status == 400


def test_loads_walks_a_wide_body() -> None:
    wide = b"[" + b",".join([b'"x"'] * 100_000) + b"]"
    assert len(parse.loads(wide)) == 100_000


@pytest.mark.parametrize(("content_type", "json_type"), [
    ("application/json", True), ("Application/JSON", True), ("application/problem+json", True),
    ("application/vnd.api+json", True), ("text/plain", False), ("application/jsonx", False),
    ("application/x-www-form-urlencoded", False), ("", False),
])
def test_is_json_type(content_type: str, json_type: bool) -> None:
    assert parse.is_json_type(content_type) is json_type


# --- integers in paths, queries and headers ---------------------------------------------------


@pytest.mark.parametrize(("text", "minimum", "value"), [
    ("1", 1, 1), ("42", 1, 42), (str(parse.MAX_ID), 1, parse.MAX_ID), ("0", 0, 0), ("7", 0, 7),
])
def test_whole_number_accepts(text: str, minimum: int, value: int) -> None:
    assert parse.whole_number(text, "id", minimum) == value


@pytest.mark.parametrize(("text", "minimum", "message"), [
    ("0", 1, "invalid id '0': must be between 1 and"),
    ("01", 1, "must be a positive integer without leading zeros"),
    ("00", 0, "must be an integer of at least 0 without leading zeros"),
    (str(parse.MAX_ID + 1), 1, f"must be between 1 and {parse.MAX_ID}"),
    ("9" * 5000, 1, r"\(5000 characters\): must be between 1 and"),   # never int()'s own error
    ("-1", 1, "must be a positive integer"),
    ("-1", 0, "must be an integer of at least 0"),
    ("+1", 1, "must be a positive integer"),
    (" 1", 1, "must be a positive integer"),
    ("1.0", 1, "must be a positive integer"),
    ("1_000", 1, "must be a positive integer"),     # int() would take it
    ("\u0661", 1, "must be a positive integer"),    # ARABIC-INDIC DIGIT ONE: int() would take it
    ("", 1, "must be a positive integer"),
])
def test_whole_number_refuses(text: str, minimum: int, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse.whole_number(text, "id", minimum)


def test_positive_int_is_whole_number_from_one() -> None:
    assert parse.positive_int("5", "cursor") == 5
    with pytest.raises(BadRequest, match="invalid cursor '0'"):
        parse.positive_int("0", "cursor")


@pytest.mark.parametrize(("text", "pid"), [
    ("1", 1), ("4242", 4242), (str(parse.MAX_PID), parse.MAX_PID),
    ("0", None), ("01", None), (str(parse.MAX_PID + 1), None), ("-1", None), ("abc", None),
    ("", None), ("\u0661", None), ("1" * 5000, None), ("1 ", None),
])
def test_os_pid_reports_instead_of_raising(text: str, pid: int | None) -> None:
    assert parse.os_pid(text) == pid


# --- body fields ------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    (10.0, 10), (-3.0, -3), (10.5, 10.5), (10, 10), ("10", "10"), (None, None), (True, True),
])
def test_integral(value: Any, expected: Any) -> None:
    result = parse.integral(value)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(("value", "names", "number"), [
    ("SIGUSR1", True, 10), ("USR1", True, 10), ("TERM", True, 15), (10, True, 10),
    (10.0, True, 10), ("10", True, 10), (15, False, 15), (15.0, False, 15),
])
def test_signal_accepts(value: Any, names: bool, number: int) -> None:
    assert parse.signal(value, signal_number, names=names) == number


@pytest.mark.parametrize(("value", "names", "message"), [
    (None, True, "'sig' is required: a name like \"SIGUSR1\" or a number"),
    (True, True, "'sig' must be a signal name or number"),
    ([], True, "'sig' must be a signal name or number"),
    (10.5, True, "'sig' must be a signal name or number"),
    ("TERM", False, "'sig' must be a signal number"),
    ("15", False, "'sig' must be a signal number"),
    ("NOPE", True, "'sig': 'NOPE' is not a known signal name"),
    ("sigterm", True, "'sig': 'sigterm' is not a known signal name"),
    ("X" * 33, True, r"'sig': 'XXXX.*is not a known signal name"),   # cut before the lookup
    (0, True, "'sig': 0 is not a valid signal number"),
    (65, False, "'sig': 65 is not a valid signal number"),
])
def test_signal_refuses(value: Any, names: bool, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse.signal(value, signal_number, "sig", names=names)


@pytest.mark.parametrize(("value", "allow_zero", "expected"), [
    (0, True, 0.0), (1, True, 1.0), (0.5, True, 0.5), (100, True, 100.0), (0.001, False, 0.001),
])
def test_number_accepts(value: Any, allow_zero: bool, expected: float) -> None:
    result = parse.number(value, "grace", maximum=100, allow_zero=allow_zero)
    assert result == expected and type(result) is float


@pytest.mark.parametrize(("value", "allow_zero", "message"), [
    (True, True, "'grace' must be a number"),
    ("1", True, "'grace' must be a number"),
    (None, True, "'grace' must be a number"),
    (math.nan, True, "'grace' must be a finite number at most 100"),
    (math.inf, True, "'grace' must be a finite number at most 100"),
    (10**400, True, "'grace' must be a finite number at most 100"),   # too large for a float
    (-1, True, "'grace' must be at least 0 and at most 100"),
    (100.5, True, "'grace' must be at least 0 and at most 100"),
    (0, False, "'grace' must be greater than 0 and at most 100"),
])
def test_number_refuses(value: Any, allow_zero: bool, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse.number(value, "grace", maximum=100, allow_zero=allow_zero)


@pytest.mark.parametrize(("value", "allow_empty", "message"), [
    (1, False, "'ref' must be a string"),
    (None, True, "'ref' must be a string"),
    ("", False, "'ref' must not be empty"),
    ("a\x00b", False, "'ref' must not contain NUL characters"),
    ("x" * 6, False, "'ref' is longer than 5 characters"),
])
def test_string_refuses(value: Any, allow_empty: bool, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse.string(value, "ref", allow_empty=allow_empty, max_length=5)


def test_string_accepts() -> None:
    assert parse.string("x" * 5, "ref", max_length=5) == "x" * 5
    assert parse.string("", "ref", allow_empty=True) == ""
    assert parse.string("\u00e9\U0001f600", "ref", max_length=2) == "\u00e9\U0001f600"  # characters


@pytest.mark.parametrize(("value", "expected"), [
    (None, {}), ({}, {}), ({"A": "b"}, {"A": "b"}), ({"A": ""}, {"A": ""}),
    ({"PATH": "/bin:/usr/bin", "X": "a=b"}, {"PATH": "/bin:/usr/bin", "X": "a=b"}),
])
def test_env_map_accepts(value: Any, expected: dict[str, str]) -> None:
    result = parse.env_map(value)
    assert result == expected
    assert result is not value   # a copy: the caller's dict is not kept


@pytest.mark.parametrize(("value", "message"), [
    ([], "'env' must be an object of strings"),
    ("A=b", "'env' must be an object of strings"),
    ({"A=B": "c"}, "'env' name 'A=B' must not contain '='"),
    ({"": "x"}, "'env' must not be empty"),
    ({"A\x00": "x"}, "'env' must not contain NUL characters"),
    ({"A": 1}, "'env.A' must be a string"),
    ({"A": None}, "'env.A' must be a string"),
    ({"A": "x\x00"}, "'env.A' must not contain NUL characters"),
])
def test_env_map_refuses(value: Any, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse.env_map(value)


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("/", "/"), ("/tmp/x y", "/tmp/x y")])
def test_absolute_path_accepts(value: Any, expected: str | None) -> None:
    assert parse.absolute_path(value, "cwd") == expected


@pytest.mark.parametrize(("value", "message"), [
    ("tmp", "'cwd' must be an absolute path"),
    ("./tmp", "'cwd' must be an absolute path"),
    ("~/x", "'cwd' must be an absolute path"),
    ("", "'cwd' must not be empty"),
    (1, "'cwd' must be a string"),
    ("/a\x00", "'cwd' must not contain NUL characters"),
    ("/" + "a" * 4096, "'cwd' is longer than 4096 characters"),
])
def test_absolute_path_refuses(value: Any, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse.absolute_path(value, "cwd")


@pytest.mark.parametrize(("text", "shown"), [
    ("a" * 40, repr("a" * 40)),
    ("a" * 41, repr("a" * 40) + "... (41 characters)"),
    ("it's", repr("it's")),
    ("\x00", repr("\x00")),
])
def test_shown_quotes_and_cuts_a_clients_value(text: str, shown: str) -> None:
    assert parse.shown(text) == shown
