"""Tensorlake's sandbox process API, served on Stablehand's records.

Routes live under ``/api/v1/processes`` and address processes by OS pid (the
newest record that ran as it) or by a managed process's name; ``handle`` is our
record id:

* wire.py: the record as Tensorlake shows it (``ProcessInfo``), errors, start bodies;
* managed_start.py: a start's managed fields (``name``, ``restart``, ``health_check``);
* addressing.py: ``{pid}``, a pid or a name;
* processes.py: start, list, get, stdin, restart, and seed 003's kill and signal;
* output.py: the output and its ``/follow`` streams;
* run.py: ``POST /api/v1/processes/run``;
* pty.py: the PTY API, ``/api/v1/pty`` (terminals, over a WebSocket).

Each module's docstring records the decisions made where Tensorlake's documents
are silent.
"""

from __future__ import annotations

from aiohttp import web

from . import output, processes, pty, run
from .output import MAX_LINE, LineReader
from .wire import tensorlake_record

routes: list[web.AbstractRouteDef] = [*processes.routes, *output.routes, *run.routes,
                                      *pty.routes]

__all__ = ["MAX_LINE", "LineReader", "routes", "tensorlake_record"]
