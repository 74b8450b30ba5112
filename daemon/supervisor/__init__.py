"""The supervisor: owns every child from creation to its last exit.

Everything outside this package uses one object, :class:`Supervisor` (core.py).
Inside, each module has one job:

==================  ==========================================================
``core.py``         the facade: start/shutdown, queries, create, stop, wait, delete
``calls.py``        the facade's other half: signals, pids, stdin, output, terminal,
                    polls and leases (Supervisor inherits it)
``table.py``        the process table: live records, the queue, the recently
                    settled cache, waiters, slots; the one place a state changes
``running.py``      created → admitted → spawned → finished → idle; owns the children
``exits.py``        a child's end (from the keeper, or a watched pidfd) settles its record
``kept.py``         the link to the keeper, the children's parent: spawn, signals,
                    stdin, exits and their acknowledgement, noticing its loss
``terminating.py``  kill, cancel, timeout: the way to idle through ``terminating``
``stopping.py``     a child's whole tree: walk, signal, orphans, wait it gone,
                    strays, unmanaged pids
``bulk.py``         many stops in one request: select, stop in one pass, wait for all
``children.py``     kept and adopted children, how each ends, the marker every child carries
``reconcile.py``    start-up and a lost keeper: take up what still runs, settle the rest
``stdio.py``        stdin (through the keeper), output reads
``unsaved.py``      every write, and records whose latest state is not saved yet
``tasks.py``        supervisor-owned tasks (a client going away cuts nothing short)
``polling.py``      exec-then-poll: cursors per consumer, output merged by arrival,
                    capped as head + tail
``leases.py``       leases: renewals, lapses (a kill), re-armed at start-up
==================  ==========================================================

How it keeps its promises:

* **Persist intent, then act.** Each transition is applied to the in-memory
  record and queued to the registry in the same synchronous step (so writes
  keep the order of events), and the commit is awaited before the action it
  announces: a child is spawned only once ``running`` is committed, a signal is
  sent only once ``terminating`` is committed (running.py, terminating.py).
* **The transition table is the gate.** Every state change goes through
  :func:`daemon.model.transition` (:meth:`ProcessTable.apply`); a request is
  checked against the named groups of states (``STOPPABLE``, ``SIGNALLABLE``...)
  and a pair missing from the table is a 409, never a 500.
* **One owner for live state.** The process table holds every record that may
  still change; the slots ``max_concurrent`` counts are derived from their states.
* **The keeper is the parent** (kept.py): it reaps, and journals each exit until
  the record's end is committed and acknowledged. **Never signal a stranger, no
  strays** (stopping.py).
* **Client disconnects don't cut work short.** State-changing work runs in
  supervisor-owned tasks; HTTP handlers await them through ``asyncio.shield``.
* **Memory and SQLite never disagree for long, and never about a promise**
  (issue 15). Every transition's write goes through
  :meth:`UnsavedRecords.write`; what a failed write costs depends on what it
  records:

  - *A request's intent* is undone and the request gets 503 (StorageError,
    "storage is failing ..."): a create whose insert fails leaves nothing in
    memory and frees its slot; a kill whose ``terminating`` (or a queued
    record's ``canceled``) cannot be committed is undone in memory, no signal
    is sent, and the process keeps running (or goes back to its place in the
    queue). A timeout whose ``terminating`` cannot be committed is tried again
    EXPIRE_RETRY later. A value SQLite refuses to bind (a lone surrogate, a
    65-bit int) fails its own insert as a 400 and nobody else's.
  - *The daemon's own intent* to run a queued record: if ``running`` cannot be
    committed the child is never spawned; the record ends idle/failed ("not
    started: storage is failing ...") and frees its slot.
  - *A spawned child's pid*: if it cannot be committed, the child's tree is
    SIGKILLed and the record ends idle/failed. The create request then gets its
    201 with that failed record, never a 503: a 503 always means that nothing
    was spawned.
  - *Facts* (an exit, a spawn failure, a finished stop, start ticks, output
    truncation) happened whatever the disk says: memory keeps them, the record
    is *unsaved* (unsaved.py) and written again with backoff until it commits
    (``registry.retry``, ``registry.recovered``). ``get``, ``wait`` and the
    by-pid lookups serve it from memory; :meth:`Supervisor.list` reads SQLite
    and overlays unsaved records onto the rows it returns, so a state filter
    still applies to the committed state.
  - Anything else that fails between a record's insert and its child running
    (output files, a spawn error of any kind) ends the record idle/failed with
    the error and frees its slot.

  A daemon that dies with records unsaved restarts from SQLite, where each is
  in its last committed state: a queued record whose failure to start was not
  saved runs then (its creator was told "queued"), a running one whose exit was
  not saved is reported lost, as after any crash.
"""

from .core import Supervisor

__all__ = ["Supervisor"]
