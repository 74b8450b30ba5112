"""A small client for Stablehand's native API, over the Unix socket or TCP.

``Client`` is synchronous and uses only the standard library (the CLI uses it);
``AsyncClient`` uses aiohttp, for agent frameworks that live in an event loop.
Both raise :class:`ApiError` (with ``status`` and ``message``) for an error
answer and :class:`ConnectionFailed` (saying what was tried and how to start
the daemon) when nothing answers.

    from daemon.client import Client
    with Client() as sh:                      # the default socket, else 127.0.0.1:9371
        record = sh.start(["sleep", "5"], ref="job-1")
        final = sh.wait(record["id"])

The token: TCP needs one by default. Unless ``token`` is given, a client looks
for it as :func:`daemon.tokens.find` says: ``token_file`` (``"none"``: no token),
``$STABLEHAND_TOKEN_FILE``, ``$STABLEHAND_TOKEN``, and, for a loopback URL only,
the daemon's own ``<state dir>/token`` if this user can read it. Over the Unix
socket only an explicitly given token is sent (the socket needs none by default).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from . import tokens
from .config import DEFAULT_PORT, default_socket, default_state_dir

START_HINT = "start the daemon with `stablehand serve` (or `systemctl start stablehand`)"


class ApiError(Exception):
    """The daemon answered with an error status."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.body = body


class ConnectionFailed(Exception):
    """Nothing answered at the socket or URL that was tried."""


class StreamBroken(ConnectionFailed):
    """A streamed answer (output, events) ended before its end: the daemon went away."""


def default_target() -> tuple[Path | None, str | None]:
    """(socket path, base URL) a client uses when given neither: $STABLEHAND_SOCKET /
    $STABLEHAND_URL, else the daemon's default socket if it exists, else TCP on 9371."""
    if os.environ.get("STABLEHAND_URL"):
        return None, os.environ["STABLEHAND_URL"].rstrip("/")
    if os.environ.get("STABLEHAND_SOCKET"):
        return Path(os.environ["STABLEHAND_SOCKET"]), None
    path = default_socket(os.environ, default_state_dir(os.environ))
    if path.exists():
        return path, None
    return None, f"http://127.0.0.1:{DEFAULT_PORT}"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(str(self._path))
        self.sock = sock


def _token(socket_path: Path | None, url: str | None, token: str | None,
           token_file: str | os.PathLike[str] | None) -> str | None:
    if token is not None:
        return token
    return tokens.find(None if socket_path is not None else url, token_file)


class Client:
    """Synchronous client. Give ``socket`` or ``url``, or neither for the defaults; the token
    is found by itself (see the module's docstring) unless ``token`` or ``token_file`` says.

    An explicit ``token_file`` (or $STABLEHAND_TOKEN_FILE) that cannot be read raises
    OSError or :class:`daemon.tokens.TokenFileError`.
    """

    def __init__(self, socket_path: str | Path | None = None, url: str | None = None,
                 token: str | None = None, timeout: float = 60.0,
                 token_file: str | os.PathLike[str] | None = None) -> None:
        if socket_path is None and url is None:
            socket_path, url = default_target()
        self.socket_path = Path(socket_path) if socket_path else None
        self.url = url.rstrip("/") if url else None
        self.token = _token(self.socket_path, self.url, token, token_file)
        self.timeout = timeout

    @property
    def target(self) -> str:
        return f"unix socket {self.socket_path}" if self.socket_path else f"{self.url}"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    # --- transport ---

    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        if self.socket_path is not None:
            return _UnixConnection(self.socket_path, timeout)
        parsed = urllib.parse.urlsplit(self.url or "")
        if parsed.scheme == "https":
            return http.client.HTTPSConnection(parsed.hostname or "", parsed.port, timeout=timeout)
        return http.client.HTTPConnection(parsed.hostname or "", parsed.port, timeout=timeout)

    def _open(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
              timeout: float | None = None) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        headers = {}
        data = raw
        if raw is not None:
            headers["Content-Type"] = "application/octet-stream"
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        conn = self._connection(timeout if timeout is not None else self.timeout)
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
        except (ConnectionRefusedError, FileNotFoundError, socket.gaierror) as exc:
            conn.close()
            raise ConnectionFailed(f"no Stablehand daemon answers at {self.target} "
                                   f"({exc.strerror or exc}); {START_HINT}") from None
        except OSError as exc:
            conn.close()
            raise ConnectionFailed(f"talking to {self.target} failed: {exc}") from None
        if response.status >= 400:
            payload = response.read()
            conn.close()
            try:
                parsed = json.loads(payload)
                message = parsed.get("error", payload.decode()) if isinstance(parsed, dict) else str(parsed)
            except ValueError:
                parsed, message = None, payload.decode(errors="replace")
            raise ApiError(response.status, message, parsed)
        return conn, response

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
                ok: Sequence[int] = (), timeout: float | None = None) -> tuple[int, Any]:
        """One call; returns (status, parsed JSON or raw bytes). ``ok``: error statuses to return."""
        try:
            conn, response = self._open(method, path, body, raw, timeout)
        except ApiError as exc:
            if exc.status in ok:
                return exc.status, exc.body
            raise
        try:
            payload = response.read()
            if response.getheader("Content-Type", "").startswith("application/json"):
                return response.status, json.loads(payload) if payload else None
            return response.status, payload
        finally:
            conn.close()

    def _record(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> dict[str, Any]:
        """A call whose answer is a JSON object (a record, a page)."""
        record: dict[str, Any] = self.request(method, path, body, raw)[1]
        return record

    # --- the API ---

    def start(self, argv: Sequence[str] | None = None, *, command: str | None = None,
              **options: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"argv": list(argv)} if argv is not None else {"command": command}
        body.update({k: v for k, v in options.items() if v is not None})
        return self._record("POST", "/processes", body)

    def list(self, state: str | None = None, ref: str | None = None, limit: int = 100,
             cursor: str | None = None, exit_state: str | None = None) -> dict[str, Any]:
        """One page, newest first: ``{"processes": [...], "next": cursor or None}``."""
        query = {k: v for k, v in {"state": state, "exitState": exit_state, "ref": ref, "limit": limit,
                                   "cursor": cursor}.items() if v is not None}
        return self._record("GET", "/processes?" + urllib.parse.urlencode(query))

    def get(self, process_id: int) -> dict[str, Any]:
        return self._record("GET", f"/processes/{process_id}")

    def kill(self, process_id: int) -> dict[str, Any]:
        return self._record("POST", f"/processes/{process_id}/signals/kill", {})

    def stop(self, process_id: int, grace: float | None = None,
             signal: str | int | None = None) -> dict[str, Any]:
        body = {k: v for k, v in {"grace": grace, "signal": signal}.items() if v is not None}
        return self._record("POST", f"/processes/{process_id}/stop", body)

    def signal(self, process_id: int, signal: str | int, group: bool = False) -> dict[str, Any]:
        return self._record("POST", f"/processes/{process_id}/signal", {"signal": signal, "group": group})

    def delete(self, process_id: int) -> None:
        self.request("DELETE", f"/processes/{process_id}")

    def wait(self, process_id: int, timeout: float | None = None) -> dict[str, Any]:
        """Block until the process is idle (or ``timeout`` passes: then the current record)."""
        import time
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = 30.0 if deadline is None else max(0.0, min(30.0, deadline - time.monotonic()))
            status, record = self.request("GET", f"/processes/{process_id}/wait?timeout={step:g}",
                                          ok=(408,), timeout=step + 30)
            if status == 200 or (deadline is not None and time.monotonic() >= deadline):
                final: dict[str, Any] = record
                return final

    def output(self, process_id: int, stream: str = "stdout", offset: int = 0,
               limit: int | None = None) -> bytes:
        query = {"stream": stream, "offset": offset, **({"limit": limit} if limit else {})}
        path = f"/processes/{process_id}/output?" + urllib.parse.urlencode(query)
        data: bytes = self.request("GET", path)[1]
        return data

    def output_range(self, process_id: int, stream: str = "stdout",
                     since: str | None = None) -> tuple[int, int]:
        """(first, end) byte offsets of a stream's captured output now: bytes below ``first``
        were dropped by the output cap (or, with ``since``, arrived before it), ``end`` is
        the size written so far (a HEAD request)."""
        query = urllib.parse.urlencode({"stream": stream, **({"since": since} if since else {})})
        conn, response = self._open("HEAD", f"/processes/{process_id}/output?{query}")
        try:
            response.read()
            return (int(response.getheader("X-Output-Offset", "0")),
                    int(response.getheader("X-Output-Next", "0")))
        finally:
            conn.close()

    def output_chunks(self, process_id: int, stream: str = "stdout", offset: int = 0,
                      follow: bool = False, timestamps: bool = False,
                      limit: int | None = None) -> Iterator[bytes]:
        """A stream's output from ``offset`` (at most ``limit`` bytes of it) in chunks as they
        arrive, without holding it whole; with ``follow`` until the process is idle; with
        ``timestamps`` each line prefixed with its arrival time and a space. Raises
        :class:`StreamBroken` when the answer ends short (the daemon went away)."""
        query = urllib.parse.urlencode({"stream": stream, "offset": offset, "follow": int(follow),
                                        **({"timestamps": 1} if timestamps else {}),
                                        **({"limit": limit} if limit else {})})
        conn, response = self._open("GET", f"/processes/{process_id}/output?{query}",
                                    timeout=None if follow else self.timeout)
        try:
            while chunk := response.read1(65536):
                yield chunk
        except (http.client.HTTPException, OSError) as exc:
            raise StreamBroken(f"the daemon at {self.target} ended the output stream of process "
                               f"{process_id} before its end ({type(exc).__name__})") from None
        finally:
            conn.close()

    def follow(self, process_id: int, stream: str = "stdout", offset: int = 0) -> Iterator[bytes]:
        """Output as it is written, until the process is idle."""
        return self.output_chunks(process_id, stream, offset, follow=True)

    def write_stdin(self, process_id: int, data: bytes) -> int:
        return int(self._record("POST", f"/processes/{process_id}/stdin", raw=data)["written"])

    def close_stdin(self, process_id: int) -> None:
        self.request("POST", f"/processes/{process_id}/stdin/close")

    def events(self, process_id: int | None = None, ref: str | None = None) -> Iterator[dict[str, Any]]:
        """State changes as they happen: the ``data`` of each ``state`` event (server-sent
        events). The stream has no end of its own: when this returns, the daemon closed it
        (it is stopping); :class:`StreamBroken` when the connection broke."""
        query = urllib.parse.urlencode({k: v for k, v in {"id": process_id, "ref": ref}.items() if v})
        conn, response = self._open("GET", "/events" + (f"?{query}" if query else ""), timeout=None)
        kind, data = "message", list[str]()
        try:
            for raw in response:
                line = raw.decode().rstrip("\r\n")
                if not line:                       # a blank line ends an event
                    if data and kind in ("state", "message"):
                        yield json.loads("\n".join(data))
                    kind, data = "message", []
                elif line.startswith(":"):         # a comment: the greeting, heartbeats
                    continue
                else:
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "event":
                        kind = value
                    elif name == "data":
                        data.append(value)
        except (http.client.HTTPException, OSError) as exc:
            raise StreamBroken(f"the daemon at {self.target} broke the event stream "
                               f"({type(exc).__name__})") from None
        finally:
            conn.close()


class AsyncClient:
    """The same calls for asyncio code (aiohttp). Use ``async with AsyncClient() as sh``."""

    def __init__(self, socket_path: str | Path | None = None, url: str | None = None,
                 token: str | None = None, token_file: str | os.PathLike[str] | None = None) -> None:
        if socket_path is None and url is None:
            socket_path, url = default_target()
        self.socket_path = Path(socket_path) if socket_path else None
        self.base = url.rstrip("/") if url else "http://localhost"
        self.token = _token(self.socket_path, url.rstrip("/") if url else None, token, token_file)
        self._session: Any = None

    async def __aenter__(self) -> AsyncClient:
        import aiohttp
        connector = aiohttp.UnixConnector(path=str(self.socket_path)) if self.socket_path else None
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._session = aiohttp.ClientSession(connector=connector, headers=headers)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._session.close()

    async def request(self, method: str, path: str, body: Any = None,
                      ok: Sequence[int] = ()) -> tuple[int, Any]:
        import aiohttp
        try:
            async with self._session.request(method, self.base + path, json=body) as response:
                payload = await response.read()
                data = json.loads(payload) if response.content_type == "application/json" and payload \
                    else payload
                if response.status >= 400 and response.status not in ok:
                    message = data.get("error", "") if isinstance(data, dict) else str(data)
                    raise ApiError(response.status, message, data)
                return response.status, data
        except aiohttp.ClientConnectionError as exc:
            target = f"unix socket {self.socket_path}" if self.socket_path else self.base
            raise ConnectionFailed(f"no Stablehand daemon answers at {target} ({exc}); "
                                   f"{START_HINT}") from None

    async def _record(self, method: str, path: str, body: Any = None, ok: Sequence[int] = ()) -> Any:
        return (await self.request(method, path, body, ok))[1]

    async def start(self, argv: Sequence[str] | None = None, *, command: str | None = None,
                    **options: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"argv": list(argv)} if argv is not None else {"command": command}
        body.update({k: v for k, v in options.items() if v is not None})
        record: dict[str, Any] = await self._record("POST", "/processes", body)
        return record

    async def get(self, process_id: int) -> dict[str, Any]:
        record: dict[str, Any] = await self._record("GET", f"/processes/{process_id}")
        return record

    async def kill(self, process_id: int) -> dict[str, Any]:
        record: dict[str, Any] = await self._record("POST", f"/processes/{process_id}/signals/kill", {})
        return record

    async def wait(self, process_id: int, timeout: float = 30.0) -> dict[str, Any]:
        record: dict[str, Any] = await self._record(
            "GET", f"/processes/{process_id}/wait?timeout={timeout:g}", ok=(408,))
        return record

    async def output(self, process_id: int, stream: str = "stdout") -> bytes:
        data: bytes = await self._record("GET", f"/processes/{process_id}/output?stream={stream}")
        return data
