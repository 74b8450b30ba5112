"""The asynchronous client (aiohttp): the calls of :class:`daemon.client.Client` for asyncio
code, such as agent frameworks that live in an event loop. ``from daemon.client import
AsyncClient`` finds it; aiohttp is imported only when a session opens."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .client_transport import (
    MAX_GRACE,
    START_HINT,
    ApiError,
    ConnectionFailed,
    default_target,
    find_token,
    poll_body,
    segment,
    start_body,
    stop_many_body,
)


class AsyncClient:
    """The same calls for asyncio code (aiohttp). Use ``async with AsyncClient() as sh``."""

    def __init__(self, socket_path: str | Path | None = None, url: str | None = None,
                 token: str | None = None, token_file: str | os.PathLike[str] | None = None) -> None:
        if socket_path is None and url is None:
            socket_path, url = default_target()
        self.socket_path = Path(socket_path) if socket_path else None
        self.base = url.rstrip("/") if url else "http://localhost"
        self.token = find_token(self.socket_path, url.rstrip("/") if url else None, token, token_file)
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
                      ok: Sequence[int] = (), timeout: float | None = None) -> tuple[int, Any]:
        """One call; ``timeout``: the whole call's, in seconds, instead of the session's."""
        import aiohttp
        options = {} if timeout is None else {"timeout": aiohttp.ClientTimeout(total=timeout)}
        try:
            async with self._session.request(method, self.base + path, json=body,
                                             **options) as response:
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
                    name: str | None = None, restart: dict[str, Any] | None = None,
                    health_check: dict[str, Any] | None = None, ready: dict[str, Any] | None = None,
                    **options: Any) -> dict[str, Any]:
        body = start_body(argv, command, name, restart, health_check, ready, options)
        record: dict[str, Any] = await self._record("POST", "/processes", body)
        return record

    async def get(self, process_id: int | str) -> dict[str, Any]:
        record: dict[str, Any] = await self._record("GET", f"/processes/{segment(process_id)}")
        return record

    async def kill(self, process_id: int | str, wait: float | None = None) -> dict[str, Any]:
        """As :meth:`Client.kill`: with ``wait``, the idle record in the same request."""
        path = f"/processes/{segment(process_id)}/signals/kill"
        if wait is None:
            record: dict[str, Any] = await self._record("POST", path, {})
        else:
            record = (await self.request("POST", f"{path}?wait={wait:g}", {}, ok=(408,),
                                         timeout=wait + 30))[1]
        return record

    async def stop_many(self, *, ids: Sequence[int] | None = None, ref: str | None = None,
                        state: str | None = None, grace: float | None = None
                        ) -> list[dict[str, Any]]:
        """As :meth:`Client.stop_many`."""
        body = stop_many_body(ids, ref, state, grace)
        answer = (await self.request("POST", "/processes/stop", body, ok=(408,),
                                     timeout=(grace if grace is not None else MAX_GRACE) + 60))[1]
        records: list[dict[str, Any]] = answer["processes"]
        return records

    async def restart(self, process_id: int | str) -> dict[str, Any]:
        record: dict[str, Any] = await self._record(
            "POST", f"/processes/{segment(process_id)}/restart", {})
        return record

    async def runs(self, process_id: int | str) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = (await self._record(
            "GET", f"/processes/{segment(process_id)}/runs"))["runs"]
        return runs

    async def wait(self, process_id: int | str, timeout: float = 30.0) -> dict[str, Any]:
        record: dict[str, Any] = await self._record(
            "GET", f"/processes/{segment(process_id)}/wait?timeout={timeout:g}", ok=(408,))
        return record

    async def output(self, process_id: int | str, stream: str = "stdout") -> bytes:
        data: bytes = await self._record("GET", f"/processes/{segment(process_id)}/output?stream={stream}")
        return data

    async def poll(self, process_id: int | str, *, yield_ms: int | None = None,
                   max_bytes: int | None = None, input: str | None = None,
                   consumer: str | None = None) -> dict[str, Any]:
        """As :meth:`Client.poll`."""
        answer: dict[str, Any] = await self._record(
            "POST", f"/processes/{segment(process_id)}/poll",
            poll_body(yield_ms, max_bytes, input, consumer))
        return answer

    async def lease(self, process_id: int | str, seconds: float | None = None) -> dict[str, Any]:
        """As :meth:`Client.lease`."""
        record: dict[str, Any] = await self._record(
            "POST", f"/processes/{segment(process_id)}/lease",
            {} if seconds is None else {"seconds": seconds})
        return record
