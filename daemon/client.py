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

Every method that takes a process id takes a managed process's name too.

Where a client connects when given neither ``socket_path`` nor ``url``, how it
finds its token (TCP needs one by default), the errors and the Unix-socket
connection live in :mod:`daemon.client_transport`; the names a caller needs are
re-exported here (``from daemon.client import ApiError, default_target``).
"""

from __future__ import annotations

import builtins
import http.client
import json
import os
import socket
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .client_async import AsyncClient
from .client_transport import (
    MAX_GRACE,
    START_HINT,
    ApiError,
    ConnectionFailed,
    StreamBroken,
    UnixConnection,
    default_target,
    find_token,
    poll_body,
    segment,
    start_body,
    stop_many_body,
)

__all__ = ["START_HINT", "ApiError", "AsyncClient", "Client", "ConnectionFailed", "StreamBroken",
           "default_target"]


class Client:
    """Synchronous client. Give ``socket`` or ``url``, or neither for the defaults; the token
    is found by itself (see :mod:`daemon.client_transport`) unless ``token`` or ``token_file`` says.

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
        self.token = find_token(self.socket_path, self.url, token, token_file)
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
            return UnixConnection(self.socket_path, timeout)
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
              name: str | None = None, restart: dict[str, Any] | None = None,
              health_check: dict[str, Any] | None = None, ready: dict[str, Any] | None = None,
              **options: Any) -> dict[str, Any]:
        """Start a process. ``name``, ``restart``, ``health_check`` or ``ready`` make it
        managed (restarted per its policy); their keys may be snake_case or camelCase."""
        body = start_body(argv, command, name, restart, health_check, ready, options)
        return self._record("POST", "/processes", body)

    def list(self, state: str | None = None, ref: str | None = None, limit: int = 100,
             cursor: str | None = None, exit_state: str | None = None,
             name: str | None = None) -> dict[str, Any]:
        """One page, newest first: ``{"processes": [...], "next": cursor or None}``."""
        query = {k: v for k, v in {"state": state, "exitState": exit_state, "ref": ref, "name": name,
                                   "limit": limit, "cursor": cursor}.items() if v is not None}
        return self._record("GET", "/processes?" + urllib.parse.urlencode(query))

    def get(self, process_id: int | str) -> dict[str, Any]:
        return self._record("GET", f"/processes/{segment(process_id)}")

    def kill(self, process_id: int | str, wait: float | None = None) -> dict[str, Any]:
        """Stop it: SIGTERM to its tree, SIGKILL after its grace. The record as the kill left
        it; with ``wait`` (seconds, up to 3600) the idle record once the tree is gone, in the
        same request, or the record as it is when ``wait`` passed first."""
        if wait is None:
            return self._record("POST", f"/processes/{segment(process_id)}/signals/kill", {})
        record: dict[str, Any] = self.request(
            "POST", f"/processes/{segment(process_id)}/signals/kill?wait={wait:g}", {}, ok=(408,),
            timeout=wait + 30)[1]
        return record

    def stop_many(self, *, ids: Sequence[int] | None = None, ref: str | None = None,
                  state: str | None = None, grace: float | None = None) -> builtins.list[dict[str, Any]]:
        """Stop every process one selector names (``ids``; the live ones carrying ``ref``;
        those in ``state``, "running" or "queued") at once, and return their records once
        all are idle (a record still not idle means its tree outlived SIGKILL). ``grace``
        replaces each one's own. Unknown ids raise ApiError 404 and stop nothing."""
        body = stop_many_body(ids, ref, state, grace)
        waits = (grace if grace is not None else MAX_GRACE) + 60   # the daemon's own bound + slack
        records: list[dict[str, Any]] = self.request("POST", "/processes/stop", body, ok=(408,),
                                                     timeout=waits)[1]["processes"]
        return records

    def stop(self, process_id: int | str, grace: float | None = None,
             signal: str | int | None = None) -> dict[str, Any]:
        body = {k: v for k, v in {"grace": grace, "signal": signal}.items() if v is not None}
        return self._record("POST", f"/processes/{segment(process_id)}/stop", body)

    def signal(self, process_id: int | str, signal: str | int, group: bool = False) -> dict[str, Any]:
        return self._record("POST", f"/processes/{segment(process_id)}/signal",
                            {"signal": signal, "group": group})

    def restart(self, process_id: int | str) -> dict[str, Any]:
        """A managed process: stop its current run and start a new one now (backoff reset)."""
        return self._record("POST", f"/processes/{segment(process_id)}/restart", {})

    def runs(self, process_id: int | str) -> builtins.list[dict[str, Any]]:
        """A managed process's runs, oldest first: run, pid, startedAt, endedAt, exit, reason."""
        runs: list[dict[str, Any]] = self._record("GET", f"/processes/{segment(process_id)}/runs")["runs"]
        return runs

    def delete(self, process_id: int | str) -> None:
        self.request("DELETE", f"/processes/{segment(process_id)}")

    def wait(self, process_id: int | str, timeout: float | None = None) -> dict[str, Any]:
        """Block until the process is idle (or ``timeout`` passes: then the current record)."""
        import time
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = 30.0 if deadline is None else max(0.0, min(30.0, deadline - time.monotonic()))
            status, record = self.request("GET", f"/processes/{segment(process_id)}/wait?timeout={step:g}",
                                          ok=(408,), timeout=step + 30)
            if status == 200 or (deadline is not None and time.monotonic() >= deadline):
                final: dict[str, Any] = record
                return final

    def output(self, process_id: int | str, stream: str = "stdout", offset: int = 0,
               limit: int | None = None) -> bytes:
        query = {"stream": stream, "offset": offset, **({"limit": limit} if limit else {})}
        path = f"/processes/{segment(process_id)}/output?" + urllib.parse.urlencode(query)
        data: bytes = self.request("GET", path)[1]
        return data

    def output_range(self, process_id: int | str, stream: str = "stdout",
                     since: str | None = None) -> tuple[int, int]:
        """(first, end) byte offsets of a stream's captured output now: bytes below ``first``
        were dropped by the output cap (or, with ``since``, arrived before it), ``end`` is
        the size written so far (a HEAD request)."""
        query = urllib.parse.urlencode({"stream": stream, **({"since": since} if since else {})})
        conn, response = self._open("HEAD", f"/processes/{segment(process_id)}/output?{query}")
        try:
            response.read()
            return (int(response.getheader("X-Output-Offset", "0")),
                    int(response.getheader("X-Output-Next", "0")))
        finally:
            conn.close()

    def output_chunks(self, process_id: int | str, stream: str = "stdout", offset: int = 0,
                      follow: bool = False, timestamps: bool = False,
                      limit: int | None = None) -> Iterator[bytes]:
        """A stream's output from ``offset`` (at most ``limit`` bytes of it) in chunks as they
        arrive, without holding it whole; with ``follow`` until the process is idle; with
        ``timestamps`` each line prefixed with its arrival time and a space. Raises
        :class:`StreamBroken` when the answer ends short (the daemon went away)."""
        query = urllib.parse.urlencode({"stream": stream, "offset": offset, "follow": int(follow),
                                        **({"timestamps": 1} if timestamps else {}),
                                        **({"limit": limit} if limit else {})})
        conn, response = self._open("GET", f"/processes/{segment(process_id)}/output?{query}",
                                    timeout=None if follow else self.timeout)
        try:
            while chunk := response.read1(65536):
                yield chunk
        except (http.client.HTTPException, OSError) as exc:
            raise StreamBroken(f"the daemon at {self.target} ended the output stream of process "
                               f"{process_id} before its end ({type(exc).__name__})") from None
        finally:
            conn.close()

    def follow(self, process_id: int | str, stream: str = "stdout", offset: int = 0) -> Iterator[bytes]:
        """Output as it is written, until the process is idle."""
        return self.output_chunks(process_id, stream, offset, follow=True)

    def write_stdin(self, process_id: int | str, data: bytes) -> int:
        return int(self._record("POST", f"/processes/{segment(process_id)}/stdin", raw=data)["written"])

    def close_stdin(self, process_id: int | str) -> None:
        self.request("POST", f"/processes/{segment(process_id)}/stdin/close")

    def poll(self, process_id: int | str, *, yield_ms: int | None = None,
             max_bytes: int | None = None, input: str | None = None,
             consumer: str | None = None) -> dict[str, Any]:
        """Exec-then-poll: write ``input`` to stdin, wait until the process ends or ``yield_ms``
        passes, and return ``{output, truncated, exited, exitCode, exitSignal, state}`` with
        what arrived since this consumer's last poll (docs/api.md, "For agents").
        ``start(..., yield_ms=...)`` polls once as it starts (the answer's ``poll``)."""
        return self._record("POST", f"/processes/{segment(process_id)}/poll",
                            poll_body(yield_ms, max_bytes, input, consumer))

    def lease(self, process_id: int | str, seconds: float | None = None) -> dict[str, Any]:
        """Renew the process's lease (``seconds``: its new length, or a first lease); the record.
        A process started with ``lease=N`` is stopped once N seconds pass without a renewal."""
        return self._record("POST", f"/processes/{segment(process_id)}/lease",
                            {} if seconds is None else {"seconds": seconds})

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
