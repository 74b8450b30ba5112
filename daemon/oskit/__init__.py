"""The only package that touches OS process APIs: spawn, pidfds, signals, /proc.

Split by job, every public name re-exported here (the rest of the daemon uses
``oskit.X``):

* :mod:`.proc` — identity (pid plus start ticks, checked after a pidfd is
  open), /proc reading, process-tree walks, environment markers.
* :mod:`.spawning` — spawning children (``subprocess.Popen``, then disarmed), the
  single reaper (:func:`reap_all`), fd helpers.
* :mod:`.signals` — signal names and numbers, pidfd and group signalling, the
  dispositions children inherit, the subreaper flag, the fd limit.

Each module's docstring gives its reasons.
(The spawning module is not named ``spawn``: that name is the function.)
"""

from __future__ import annotations

from .proc import (
    PROC,
    ProcInfo,
    adopted_children,
    boot_id,
    children_of,
    descendants,
    environ_marker,
    is_alive,
    open_verified_pidfd,
    proc_info,
    proc_table,
    process_exists,
    start_ticks,
    tree_of,
)
from .signals import (
    become_subreaper,
    group_has_members,
    open_pidfd,
    pidfd_signal,
    raise_nofile_limit,
    reset_inherited_signals,
    send_via_pidfd,
    signal_group,
    signal_name,
    signal_number,
    valid_signals,
)
from .spawning import (
    ExitStatus,
    Spawned,
    SpawnError,
    close_fd,
    reap_all,
    spawn,
    write_nonblocking,
)

__all__ = [
    "PROC", "ExitStatus", "ProcInfo", "SpawnError", "Spawned", "adopted_children",
    "become_subreaper", "boot_id", "children_of", "close_fd", "descendants", "environ_marker",
    "group_has_members", "is_alive", "open_pidfd", "open_verified_pidfd", "pidfd_signal",
    "proc_info", "proc_table", "process_exists", "raise_nofile_limit", "reap_all",
    "reset_inherited_signals", "send_via_pidfd", "signal_group", "signal_name", "signal_number",
    "spawn", "start_ticks", "tree_of", "valid_signals", "write_nonblocking",
]
