"""Processes addressed by OS pid, as the seed documents' routes address them (compat.py and
Tensorlake's routes).

A pid maps to the newest record that ran as that pid, and only a record whose
process is still running under it is acted on. A pid Stablehand did not start is
signalled only when the operator set ``allow_unmanaged``.
"""

from __future__ import annotations

from aiohttp import web

from ..errors import BadRequest, NotFound
from ..managed import check_name
from ..model import Process, State
from ..supervisor import Supervisor
from . import parse
from .keys import CONFIG, supervisor_of


def from_path(request: web.Request) -> int | None:
    """The ``{pid}`` of the path, or None if it is no pid (each route answers that in its words)."""
    return parse.os_pid(request.match_info["pid"])


async def process_id(request: web.Request, *, unknown_is_bad_id: bool = False) -> int:
    """The ``{id}`` of a native route: a record id, or a name (never all digits), resolved to
    the newest record carrying it. NotFound (404) for a name no record carries, or, with
    ``unknown_is_bad_id``, BadRequest (400): Cyrnel's kill route (seed 004) documents a
    400 for an id path parameter that is not a number. A segment that cannot be a name
    (it holds '%', a control character...) is a 400 everywhere."""
    text = request.match_info["id"]
    if (text.isascii() and text.isdigit()) or not text:
        return parse.path_id(request)
    try:
        name = check_name(text)
    except ValueError as exc:
        raise BadRequest(f"{text[:80]!r} is neither a process id nor a name: {exc}") from None
    try:
        return await supervisor_of(request).resolve(name)
    except NotFound:
        if unknown_is_bad_id:
            raise BadRequest(f"{text[:80]!r} is neither a process id nor the name of a process") \
                from None
        raise


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
