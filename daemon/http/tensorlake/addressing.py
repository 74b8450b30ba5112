"""``{pid}`` of Tensorlake's process routes: a pid or a name (Tensorlake's ``ProcessRef``).

Its rule, shared by its SDKs and daemon (PR #779): a non-empty segment of ASCII
digits is a pid; anything else is a managed process's name, percent-decoded
(the SDKs percent-encode names: ``web 1`` is ``web%201``).

* A pid names the newest record that ran under it: a managed process's current
  run, and also any of its earlier runs (the registry looks in the runs too),
  so a pid an SDK kept from before a restart still finds its process. Digits
  that are no possible pid (0, a leading zero, past 2**31-1) but fit seed 003's
  int32 name no process: 404; longer digit strings are a 400 ``invalid_pid``.
* A name is decoded from the raw path as strict UTF-8 (aiohttp would leave an
  invalid sequence such as ``%FF`` as its three characters, the same as a
  name ``%FF`` sent as ``%25FF``), then resolved to the newest record holding it,
  live or ended. One Stablehand could never hold (a control character, more
  than 128 characters, bytes that are not UTF-8) is a 400 ``invalid_name``; an
  unknown name is a 404 ``not_found``, as an unknown pid is.
"""

from __future__ import annotations

import dataclasses
from urllib.parse import unquote_to_bytes

from aiohttp import web

from ...errors import BadRequest, NotFound
from ...managed import check_name
from ...model import Process
from .. import parse
from ..keys import supervisor_of

_INT32_DIGITS = 10
_SEGMENT = 4     # /api/v1/processes/{pid}/...: the index of {pid} in the path split at "/"


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """What ``{pid}`` names: the pid it gives (None for a name), and its record, if any
    (a name always has one; a pid Stablehand never ran has none)."""

    shown: str
    pid: int | None
    record: Process | None


def ref_of(request: web.Request) -> int | str:
    """The segment as a pid or a name, before any lookup. BadRequest/NotFound as above."""
    text = request.match_info["pid"]
    if text.isascii() and text.isdigit():
        pid = parse.os_pid(text)
        if pid is not None:
            return pid
        if len(text) <= _INT32_DIGITS:
            raise NotFound(f"process {text} not found", code="not_found")
        raise BadRequest(f"invalid pid {parse.shown(text)}", code="invalid_pid")
    name = _decoded(request, text)
    try:
        return check_name(name)
    except ValueError as exc:
        raise BadRequest(f"{parse.shown(name)} is neither a pid nor a process name: {exc}",
                         code="invalid_name") from None


def _decoded(request: web.Request, text: str) -> str:
    """The segment percent-decoded as strict UTF-8 from the raw path (see the module doc)."""
    parts = request.raw_path.split("?", 1)[0].split("/")
    raw = parts[_SEGMENT] if len(parts) > _SEGMENT else text
    if "%" not in raw:
        return text
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"{parse.shown(raw)} is neither a pid nor a process name: a name is "
                         "percent-encoded UTF-8", code="invalid_name") from None


async def target(request: web.Request, ref: int | str | None = None) -> Target:
    """What the path's ``{pid}`` names (``ref``: its :func:`ref_of`, if taken already)."""
    if ref is None:
        ref = ref_of(request)
    supervisor = supervisor_of(request)
    if isinstance(ref, int):
        return Target(str(ref), ref, await supervisor.record_for_pid(ref))
    try:
        record = await supervisor.get(await supervisor.resolve(ref))
    except NotFound as exc:
        raise NotFound(exc.message, code="not_found") from None
    return Target(ref, None, record)


async def record_for(request: web.Request) -> Process:
    """The record the path's ``{pid}`` names: 400 invalid_pid/invalid_name, 404 not_found."""
    found = await target(request)
    if found.record is None:
        raise NotFound(f"process {found.shown} not found", code="not_found")
    return found.record
