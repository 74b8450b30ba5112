"""The managed fields of Tensorlake's start body: ``name``, ``restart``, ``health_check``.

A start with any of them (not null) is a managed process (Tensorlake's PR #730).
Its SDKs send them in two ways, both accepted: Python sends whole objects with
its defaults filled in (``model_dump(exclude_none=True)``), TypeScript and the
``tl`` CLI only the keys the caller set; a missing key takes Tensorlake's default
(daemon/managed.py: ``restart.policy`` ``on_failure``, backoff 500 → 30000 ms;
health check delay 5000, interval 1000, timeout 500 ms, threshold 3). A key sent
as null is a missing key (``max_restarts: null`` is its default, no limit;
``path: null`` is ``/``). A ``path`` on a ``tcp`` check is accepted and unused.
Only ``http`` and ``tcp`` checks exist here, as in Tensorlake (the native API's
``exec`` does not).

Names follow Tensorlake's rule (``validate_managed_name``: not empty, no ``/``,
not all ASCII digits, which would read as a pid), with its messages word for
word, then Stablehand's own (daemon/managed.py ``check_name``): at most 128
characters and no control characters, which Tensorlake allows. A name still
held by a live process is a 409 ``name_conflict`` (processes.py).

Every error is a 400 ``invalid_request`` naming the field (wire.spec adds the code).
"""

from __future__ import annotations

from typing import Any

from ...errors import BadRequest
from ...managed import ManagedSpec, check_name, spec_from_wire

FIELDS = frozenset({"name", "restart", "health_check"})


def start_fields(body: dict[str, Any]) -> tuple[str | None, ManagedSpec | None]:
    """(name, managed spec) of a start body; (None, None) for an unmanaged process."""
    name = body.get("name")
    if name is not None:
        name = tensorlake_name(name)
    present = {key: _without_nulls(body[key]) for key in FIELDS if body.get(key) is not None}
    try:
        return name, spec_from_wire(present, camel=False)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def tensorlake_name(value: Any) -> str:
    """A managed process's name, checked as Tensorlake's daemon checks it, then as ours."""
    if not isinstance(value, str):
        raise BadRequest("'name' must be a string")
    if not value:
        raise BadRequest("managed process name must not be empty")
    if "/" in value:
        raise BadRequest("managed process name must not contain '/'")
    if value.isascii() and value.isdigit():
        raise BadRequest("managed process name must not be all digits; numeric strings are "
                         "reserved for PID addressing")
    try:
        return check_name(value)
    except ValueError as exc:
        raise BadRequest(f"'name': {exc}") from None


def _without_nulls(value: Any) -> Any:
    """An object without its null members (a null member takes its default)."""
    if not isinstance(value, dict):
        return value   # spec_from_wire says it must be an object
    return {key: member for key, member in value.items() if member is not None}
