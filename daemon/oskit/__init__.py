"""The only package that touches OS process APIs: pidfds, signals, /proc.

Split by job, every public name re-exported here (the rest of the daemon uses
``oskit.X``):

* :mod:`.proc` — identity (pid plus start ticks, checked after a pidfd is
  open), /proc reading, process-tree walks, environment markers.
* :mod:`.signals` — signal names and numbers, exit statuses, pidfd and group
  signalling, the dispositions the keeper inherits, the fd limit.
* :mod:`.memory` — giving freed heap pages back to the kernel (``malloc_trim``).

The daemon spawns and reaps nothing but its keeper: children are spawned and
reaped by the keeper (:mod:`daemon.keeper`, which has its own standard-library
code for it).

Each module's docstring gives its reasons.
"""

from __future__ import annotations

from .memory import trim_heap
from .proc import (
    PROC,
    ProcInfo,
    adopted_children,
    boot_id,
    children_of,
    close_fd,
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
    ExitStatus,
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

__all__ = [
    "PROC", "ExitStatus", "ProcInfo", "adopted_children", "boot_id", "children_of", "close_fd",
    "descendants", "environ_marker", "group_has_members", "is_alive", "open_pidfd",
    "open_verified_pidfd", "pidfd_signal", "proc_info", "proc_table", "process_exists",
    "raise_nofile_limit", "reset_inherited_signals", "send_via_pidfd", "signal_group",
    "signal_name", "signal_number", "start_ticks", "tree_of", "trim_heap", "valid_signals",
]
