"""Processes addressed by OS pid, as the seed documents' routes address them (compat.py and
Tensorlake's routes).

A pid maps to the newest record that ran as that pid, and only a record whose
process is still running under it is acted on. A pid Stablehand did not start is
signalled only when the operator set ``allow_unmanaged``.
"""

from __future__ import annotations

from aiohttp import web

from ..model import Process, State
from ..supervisor import Supervisor
from . import parse
from .keys import CONFIG


def from_path(request: web.Request) -> int | None:
    """The ``{pid}`` of the path, or None if it is no pid (each route answers that in its words)."""
    return parse.os_pid(request.match_info["pid"])


def allow_unmanaged(request: web.Request) -> bool:
    return request.app[CONFIG].allow_unmanaged


async def running_record(supervisor: Supervisor, pid: int) -> tuple[Process | None, Process | None]:
    """(newest record for ``pid``, that record again if its process is running under that
    pid now, else None)."""
    record = await supervisor.record_for_pid(pid)
    if record is None:
        return None, None
    running = record.state is State.RUNNING and supervisor.is_live_leader(record)
    return record, record if running else None
