"""The keeper: the parent of every child, so the daemon can crash, restart or be upgraded.

Like containerd's shims and podman's conmon, Stablehand is two processes. The
keeper (``stablehand keeper --state-dir DIR``, one per state dir) spawns children
on the daemon's request, holds their pipes, pumps their output into
``<state_dir>/output/<id>.stdout|.stderr`` with the cap enforced as it writes, and
reaps them, journalling each exit until the daemon acknowledges it. The daemon
keeps the API, the registry and the policy. This package is both sides: the
keeper (standard library only, single-threaded, never imports asyncio) and the
daemon's asyncio client (:mod:`.client`, and :mod:`.starting`, which starts a
keeper when none answers): the only modules here that import asyncio, and
ones the keeper never imports.

Modules, in reading order:

- :mod:`.protocol` — the wire format (newline-delimited JSON, version 1) and
  the validation of request fields; shared by both sides.
- :mod:`.main` — start-up: state dir, lock, subreaper, signal dispositions,
  journal, socket. ``python -m daemon.keeper`` and ``stablehand keeper`` land here.
- :mod:`.server` — the ``selectors`` loop, connections, hello, dispatch, stopping.
- :mod:`.table` — the live children: spawn, signals, stdin, output pumping,
  reaping and journalling exits.
- :mod:`.children` — one spawn (``subprocess.Popen``, new session, pidfd) and
  what is held per child; :mod:`.pump` — one captured stream, its cap and index;
  :mod:`.journal` — the exit journal; :mod:`.connection` — framing and buffers.
- :mod:`.client`, :mod:`.starting` and :mod:`.records` — the daemon's side
  (the connection and its requests; starting and reaping a keeper; the records
  and errors both share).

Files in the state dir: ``keeper.lock`` (flock; holds ``{"pid", "version"}``),
``keeper.sock`` (0600), ``keeper/exits.journal``, ``keeper/keeper.log`` (the
keeper's stderr when the client started it: JSON lines, events ``keeper.*``),
and per child ``output/<id>.stdout``, ``.stderr`` and their ``.idx`` indexes
(four files; the daemon deletes all four with the record).

Decisions where the issue is silent:

- Ids are the daemon's record ids (integers >= 1). An id is in use while its
  child lives and until its exit is acknowledged; a spawn with an id in use is
  refused (EEXIST).
- One daemon connection at a time: the last valid hello wins, and the previous
  connection is sent ``{"event": "replaced"}`` and closed (see :mod:`.server`).
  A daemon that restarted must not be locked out by its half-dead predecessor;
  two live daemons are already kept apart by the daemon's own lock.
- Exits are delivered at least once: as an event when they happen (after the
  journal's fdatasync), and in every ``list`` until acknowledged. The daemon handles them
  idempotently by id and acks after its commit.
- Signals go through the child's pidfd; ``group`` adds ``killpg`` on the child's
  pid, safe because the keeper, the only reaper, has not reaped the leader. A
  child that exited but is not yet acknowledged answers ``delivered: false``;
  an unknown id is ESRCH. Stragglers of a group whose leader is reaped are the
  daemon's business, as today (found by start time, signalled by pidfd).
- stdin: a write is accepted whole (written, or the rest buffered, up to 1 MiB
  per child) or refused whole with EAGAIN (the daemon's 503);
  ``stdin_close`` closes once the buffer is written.
- Output cap: at most ``cap + min(max(cap/4, 64 KiB), 768 KiB)`` bytes of a
  stream on disk, plus at most 132 KiB of index: under ``cap + 1 MiB`` in all.
  Where holes cannot be punched, or a write fails (ENOSPC), bytes are counted
  as ``lost`` instead of stored — never rotation (offsets would change
  meaning) and never backpressure (a child must not hang because of where its
  log lives). Backpressure is only for a keeper that cannot keep up. Details
  in :mod:`.pump`. Readers find the first kept byte with
  :func:`.pump.first_kept_offset` (``lseek(SEEK_DATA)``), or ``*_dropped`` in
  ``list`` and exit events; times of bytes with :class:`.pump.OutputIndex`.
- ``cwd: null`` runs the child in the keeper's working directory (the one it
  was started in); the daemon should always send a cwd. ``env`` is complete:
  the keeper adds nothing and passes nothing of its own environment.
- Lifecycle: the keeper never exits on its own, with children or without (a
  systemd unit or the daemon starts it; an idle keeper costs ~15 MiB). SIGTERM
  and SIGINT stop every child — SIGTERM to each process group and to orphans
  re-parented to it, SIGKILL after ``--grace`` (10 s) — journal their exits and
  exit 0. SIGHUP is ignored.
- A keeper killed with SIGKILL takes nothing with it but the capture: children
  live on in their own sessions. Their pipes lose their reader, so a child
  that writes afterwards gets EPIPE (SIGPIPE, by default fatal) and one
  reading a stdin pipe sees EOF — as with conmon. Unacknowledged exits are
  still in the journal for the next keeper; exits that happen while no
  keeper runs are lost ("exit status unknown").
- Terminals: a spawn with ``tty: {rows, cols}`` runs the child on a pty
  (:mod:`.children` says how, and why a terminal child, alone, gets a
  ``preexec_fn``); the keeper holds the master, so the terminal outlives the
  daemon. The terminal's bytes go to ``<id>.stdout`` (no ``.stderr``),
  ``stdin_write`` types into it, ``resize`` sets its size. A keeper killed
  with SIGKILL closes the master: the terminal hangs up (SIGHUP to the
  child's session), as when a terminal window is closed.
- Security: the socket is 0600 and each peer's uid (SO_PEERCRED) must equal
  the keeper's euid, else the connection is closed before a byte is read; at
  most 16 connections may wait for their hello, for at most 10 s each. Files
  are opened ``O_NOFOLLOW`` and created 0600, directories 0700. Garbage costs
  an error reply (or, before the hello, the connection), never the keeper.

Cost (measured on the CI box, ``python -m tests.keeper.measure``): idle RSS
about 14.5 MiB (8.7 of it the bare interpreter); per child about 2 KiB and
exactly 1 fd (pidfd) with both streams discarded, 3 when both are captured
(pidfd, two pipe read ends), plus the stream file and its index for each stream
from its first byte (7 at most), and one more with a stdin pipe (its write end).
A child on a terminal costs 4: pidfd and three descriptors of the pty master
(output, keystrokes, resize), 6 once it has written. Stream files are made at
the first byte (most children never write to stderr, many to neither): four
inode allocations saved per quiet start.
"""
