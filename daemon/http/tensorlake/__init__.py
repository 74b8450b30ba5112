"""Tensorlake's sandbox process API, served on Stablehand's records.

Routes live under ``/api/v1/processes`` and address processes by OS pid (the
newest record that ran as it), except ``handle``, which is our record id:

* wire.py: the record as Tensorlake shows it, errors, start bodies, the pid lookup;
* processes.py: start, list, get, stdin, and seed 003's kill and signal;
* output.py: the output and its ``/follow`` streams;
* run.py: ``POST /api/v1/processes/run``.

Each module's docstring records the decisions made where Tensorlake's documents
are silent.
"""

from __future__ import annotations

from aiohttp import web

from . import output, processes, run
from .output import MAX_LINE, LineReader
from .wire import tensorlake_record

routes: list[web.AbstractRouteDef] = [*processes.routes, *output.routes, *run.routes]

__all__ = ["MAX_LINE", "LineReader", "routes", "tensorlake_record"]
