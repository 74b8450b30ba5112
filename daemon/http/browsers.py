"""What keeps web pages out: the Origin, Host and Content-Type checks at the edge.

A page the user opens can send requests to 127.0.0.1; Stablehand must never act
on them. Three doors, each closed here (docs/security.md, "Browsers, hosts and
bodies"):

* **Origin.** Browsers send ``Origin`` on every cross-site request that can
  change anything (and on every CORS request). A request carrying an Origin
  that is not listed in ``allowed_origins`` (empty by default; entries compared
  case-insensitively, without a trailing slash, no wildcards) is a 403 before
  anything else, on TCP and the Unix socket alike, ``/healthz`` included. A
  listed Origin gets CORS: preflights are answered (204) and responses carry
  ``Access-Control-Allow-Origin``, so a page the operator chose can read them.
  The daemon's own origin (``http://`` + the address and port a TCP connection
  reached) is not refused: no page can have it, and WebSocket clients send it
  by default (:func:`_own_origin`).
* **Host (DNS rebinding).** A rebound page is same-origin and sends no Origin,
  but its ``Host`` is the attacker's name. A request that no bearer token vouches
  for (the operator opted out of tokens, or a Unix-socket request, which needs
  none by default) must name a loopback host (``localhost``, ``*.localhost``,
  127.0.0.0/8, ``::1``; any port) or one listed in ``allowed_hosts`` (an entry
  without a port matches any port; with one, only that port). The Unix socket is
  checked too because a socket can be forwarded to TCP (socat, ssh -L); curl
  ``--unix-socket ... http://localhost/`` and Stablehand's own client send
  ``Host: localhost``. A request without a Host header (HTTP/1.0 tools) passes:
  browsers always send one. With a token, any Host is fine (Tensorlake's SDK
  sends ``Host: <sandbox>.local``).
* **Content-Type.** Pages can send three types without a preflight
  (``text/plain``, ``application/x-www-form-urlencoded``,
  ``multipart/form-data``): a POST/PUT/PATCH/DELETE declaring one of them is a
  415 on every route, even with an empty body (the form-POST attack on a kill
  route). On JSON routes a non-empty body must be declared ``application/json``
  (or ``*/*+json``); a body without a type is a 415, and an empty body without
  a type is accepted (``curl -X POST .../signals/kill`` sends none). Raw-byte
  routes (stdin, marked with ``parse.raw_body``) take ``application/octet-stream``
  or no type at all (Tensorlake's SDK sends its stdin bytes with none).
"""

from __future__ import annotations

import functools
import ipaddress

from aiohttp import web

from ..config import Config
from ..errors import Forbidden, UnsupportedMediaType
from .parse import RAW_BODY_HANDLERS, is_json_type

SAFELISTED = frozenset({"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CORS_ALLOW_HEADERS = "Authorization, Content-Type, Idempotency-Key, Last-Event-ID"
CORS_EXPOSE_HEADERS = ("X-Output-Offset, X-Output-Next, X-RateLimit-Limit, X-RateLimit-Remaining, "
                       "X-RateLimit-Reset, Retry-After")
CORS_MAX_AGE = "600"


# --- Origin ---------------------------------------------------------------------------

def _origin_key(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


@functools.lru_cache(maxsize=8)
def _origins(allowed: tuple[str, ...]) -> frozenset[str]:
    return frozenset(_origin_key(origin) for origin in allowed)


def origin_allowed(request: web.Request, config: Config) -> bool | None:
    """None when the request carries no Origin; else whether every Origin it carries is listed."""
    sent = request.headers.getall("Origin", ())
    if not sent:
        return None
    allowed = _origins(config.allowed_origins)
    return all(_origin_key(origin) in allowed for origin in sent)


def check_origin(request: web.Request, config: Config) -> None:
    if origin_allowed(request, config) is False and not _own_origin(request):
        raise Forbidden("requests from web pages are refused: this Origin is not in allowed_origins")


def _own_origin(request: web.Request) -> bool:
    """Whether every Origin sent is the daemon's own: ``http://`` + the address and port
    the connection reached (TCP only).

    Non-browser WebSocket clients send one by default (Python's websocket-client,
    which Tensorlake's SDK uses for its PTYs, sends ``Origin: http://<host:port of
    the URL>``). No web page can carry it: a page with that origin would have been
    served by this address and port, that is by the daemon, which serves none; a
    rebound page carries its own name. It gets no CORS headers (origin_allowed).
    """
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    if not isinstance(sockname, tuple) or len(sockname) < 2:
        return False   # the Unix socket: no address of its own
    host = f"[{sockname[0]}]" if ":" in sockname[0] else sockname[0]
    own = {f"http://{host}:{sockname[1]}"} | ({f"http://{host}"} if sockname[1] == 80 else set())
    return all(_origin_key(origin) in own for origin in request.headers.getall("Origin", ()))


def preflight(request: web.Request, config: Config) -> web.Response | None:
    """The answer to a CORS preflight from an allowed Origin, or None if this is not one."""
    if (request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers
            or not origin_allowed(request, config)):
        return None
    return web.Response(status=204, headers={
        "Access-Control-Allow-Methods": "GET, POST, DELETE",
        "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
        "Access-Control-Max-Age": CORS_MAX_AGE})


def cors_headers(request: web.Request, response: web.StreamResponse, config: Config) -> None:
    """Let an allowed Origin read the response (called as responses are prepared)."""
    if origin_allowed(request, config):
        response.headers["Access-Control-Allow-Origin"] = request.headers["Origin"].strip()
        response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
        response.headers.add("Vary", "Origin")


# --- Host -----------------------------------------------------------------------------

def split_host(value: str) -> tuple[str, str | None] | None:
    """``Host`` (or an allowed_hosts entry) as (lower-case name, port or None); None if malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1:]
    elif value.count(":") > 1:
        return None  # an IPv6 address must be in brackets
    else:
        name, colon, port = value.partition(":")
        rest = colon + port
    if not rest:
        return name.rstrip("."), None
    if not rest.startswith(":") or not rest[1:].isascii() or not rest[1:].isdigit():
        return None
    return name.rstrip("."), rest[1:]


@functools.lru_cache(maxsize=64)
def is_loopback_name(name: str) -> bool:
    """Cached: every request without a token asks this of its Host, nearly always the same
    one or two names, and parsing an address costs more than the rest of the check."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


@functools.lru_cache(maxsize=8)
def _hosts(allowed: tuple[str, ...]) -> frozenset[tuple[str, str | None]]:
    return frozenset(parsed for parsed in map(split_host, allowed) if parsed is not None)


def host_allowed(value: str, config: Config) -> bool:
    parsed = split_host(value)
    if parsed is None:
        return False
    name, port = parsed
    if is_loopback_name(name):
        return True
    allowed = _hosts(config.allowed_hosts)
    return (name, None) in allowed or (port is not None and (name, port) in allowed)


def check_host(request: web.Request, config: Config) -> None:
    """DNS rebinding: without a token, only loopback or allowed_hosts names are served."""
    for value in request.headers.getall("Host", ()):
        if not host_allowed(value, config):
            raise Forbidden("this Host is not a loopback name: add it to allowed_hosts, "
                            "or call with a bearer token")


# --- Content-Type ---------------------------------------------------------------------

def check_body_type(request: web.Request) -> None:
    """415 for a body type the route does not take (rules in the module docstring)."""
    if request.method not in MUTATING or request.match_info.http_exception is not None:
        return
    raw = request.match_info.handler in RAW_BODY_HANDLERS
    declared = "Content-Type" in request.headers
    essence = request.content_type.lower()
    wanted = "application/octet-stream" if raw else "application/json"
    if declared and essence in SAFELISTED:
        raise UnsupportedMediaType(
            f"Content-Type {essence} is refused on {request.method} (web pages can send it "
            f"without asking); send {wanted}" + ("" if raw else " or no body"))
    if raw:
        if declared and essence != "application/octet-stream":
            raise UnsupportedMediaType("Content-Type must be application/octet-stream (or absent)")
    elif request.body_exists and not (declared and is_json_type(essence)):
        raise UnsupportedMediaType("a request body must be sent with Content-Type: application/json")
