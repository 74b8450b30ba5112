"""Supervisor-owned tasks: state-changing work a client going away must not cut short.

An HTTP handler is cancelled when its client disconnects. A kill, a create or a
stop must not be cancelled with it (a half-done transition would leave memory,
SQLite and the machine disagreeing), so such work runs in a task owned here and
the handler awaits it through ``asyncio.shield`` (:meth:`Tasks.owned`): the
handler stops waiting, the work goes on.

Every task is held until it ends (the loop keeps only weak references). A task
that fails with an :class:`~daemon.errors.ApiError` was an answer for a caller
(a 409, a 503...), not a fault; any other failure is logged as
``supervisor.task_failed``. At shutdown the supervisor either waits for them
(``shutdown = "stop"``: stops under way must finish) or cancels them
(``"detach"``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from ..errors import ApiError

T = TypeVar("T")


class Tasks:
    def __init__(self, log: Any) -> None:
        self._log = log
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def pending(self) -> list[asyncio.Task[Any]]:
        return list(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``coro`` in a task the supervisor owns."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            if isinstance(task.exception(), ApiError):
                return  # an answer for a caller (409, 503...), not a fault
            self._log.error("supervisor.task_failed", error=repr(task.exception()))

    async def owned(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run state-changing work in an owned task; a cancelled caller does not cut it short."""
        return await asyncio.shield(self.spawn(coro))

    async def drain(self) -> None:
        """Wait until every task (and every task those start) has ended."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
