"""What ``stablehand run`` takes from where it is run: the caller's directory and environment.

The daemon's API stays explicit (an absolute ``cwd``, an ``env`` to add), so the
CLI works out both here, from the shell it runs in, and sends them. Pure
functions of their arguments (plus the current directory), so they are tested
without a daemon. Decisions:

* The working directory is the shell's ``$PWD`` when it names the current
  directory (so a symlinked path stays as the user sees it), else the real
  path; a relative ``--cwd`` is taken from there.
* The environment sent is the caller's, minus what describes the caller's own
  process to its own supervisor (``NOTIFY_SOCKET``, ``LISTEN_*``,
  ``WATCHDOG_*``) and Stablehand's own variables (``STABLEHAND_*``: a token
  must not reach a child), with ``PWD`` set to the child's directory. ``--env
  KEY`` names a variable to pass anyway. The daemon adds what it sends to its
  own environment, so with ``--clean-env`` a child still sees the daemon's
  variables (PATH, HOME of the daemon's user), just none of the caller's.
* The daemon keeps a record's environment in its registry (never served back).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

PRIVATE_ENV_PREFIXES = ("LISTEN_", "WATCHDOG_", "STABLEHAND_")
PRIVATE_ENV_NAMES = frozenset({"NOTIFY_SOCKET"})


class UsageError(Exception):
    """A command line that cannot be sent (exit 2, like argparse's own errors)."""


def caller_cwd(environ: Mapping[str, str]) -> str:
    """This shell's directory: $PWD when it names the current directory, else the real path."""
    try:
        real = os.getcwd()
    except FileNotFoundError:
        raise UsageError("the current directory no longer exists; give one with --cwd") from None
    logical = environ.get("PWD", "")
    if logical.startswith("/"):
        try:
            if os.path.samefile(logical, real):
                return logical
        except OSError:
            pass
    return real


def resolve_cwd(given: str | None, environ: Mapping[str, str]) -> str:
    base = caller_cwd(environ)
    if given is None:
        return base
    return os.path.normpath(os.path.join(base, os.path.expanduser(given)))


def child_env(specs: list[str], clean: bool, environ: Mapping[str, str], cwd: str) -> dict[str, str]:
    """The ``env`` a run sends (see the module's docstring)."""
    env: dict[str, str] = {}
    if not clean:
        env = {key: value for key, value in environ.items()
               if key not in PRIVATE_ENV_NAMES and not key.startswith(PRIVATE_ENV_PREFIXES)}
        if "PWD" in env:
            env["PWD"] = cwd
    for spec in specs:
        name, has_value, value = spec.partition("=")
        if not name:
            raise UsageError(f"--env {spec!r}: a variable name is missing (--env KEY=VALUE or --env KEY)")
        if has_value:
            env[name] = value
        elif name in environ:
            env[name] = environ[name]
        else:
            raise UsageError(f"--env {name}: {name} is not set here; give it a value with "
                             f"--env {name}=VALUE")
    return env
